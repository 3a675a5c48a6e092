package io.kvmarket.examples.server;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** --bind must take an address, and reject what is not one with a clear message. */
@Timeout(30)
class ServerOptionsBindTest {

    /**
     * What InetAddress.getByName would take without complaint: "" as loopback, "999" as 0.0.3.231, "10.1" as
     * 10.0.0.1 (inet_aton shorthand), a multicast address.
     */
    @ParameterizedTest
    @ValueSource(strings = {"", "999", "10.1", "1", "224.0.0.1", "0x7f.1"})
    void bindRejectsWhatIsNotAUnicastAddressLiteral(String value) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ServerOptions.parse("--bind", value), "--bind '" + value + "' was accepted");
        assertTrue(e.getMessage().contains("--bind"), e.getMessage());
    }

    @Test
    void addressLiteralsAreTaken() {
        assertEquals("10.213.20.2", ServerOptions.parse("--bind", "10.213.20.2").bind().getHostAddress());
        assertTrue(ServerOptions.parse("--bind", "::1").bind().isLoopbackAddress());
        assertTrue(ServerOptions.parse("--bind", "0.0.0.0").bind().isAnyLocalAddress());
    }

    @Test
    void bindRejectsAnUnresolvableNameWithAClearMessage() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ServerOptions.parse("--bind", "no-such-host.invalid"));
        assertTrue(e.getMessage().contains("--bind"), e.getMessage());
    }
}
