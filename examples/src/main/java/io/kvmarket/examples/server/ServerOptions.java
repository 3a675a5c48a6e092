package io.kvmarket.examples.server;

import io.kvmarket.examples.model.ModelConfig;
import io.kvmarket.node.NodeDirectory;

import java.net.InetAddress;
import java.net.UnknownHostException;
import java.nio.file.Path;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.IntStream;

/**
 * Command line of {@link InferenceServer}: {@code --port N} (0: any free port), {@code --bind ADDRESS} (loopback by
 * default), {@code --node-dir PATH},
 * {@code --marketplace on|off}, {@code --seed N}, {@code --model demo|tiny}, {@code --chunk-tokens N},
 * {@code --threads N}. Every flag is optional.
 */
public record ServerOptions(int port, InetAddress bind, EngineOptions engine) {

    public static final long DEFAULT_SEED = 1;
    public static final int DEFAULT_CHUNK_TOKENS = 256;
    private static final Pattern IPV4 = Pattern.compile("(\\d{1,3})\\.(\\d{1,3})\\.(\\d{1,3})\\.(\\d{1,3})");
    private static final Pattern IPV6 = Pattern.compile("[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*");

    public ServerOptions {
        if (port < 0 || port > 65535) {
            throw new IllegalArgumentException("port outside [0, 65535]: " + port);
        }
        if (bind == null) {
            throw new IllegalArgumentException("a bind address is required");
        }
    }

    /** On loopback. */
    public ServerOptions(int port, EngineOptions engine) {
        this(port, InetAddress.getLoopbackAddress(), engine);
    }

    /** @throws IllegalArgumentException for an unknown flag, a flag without value, or a malformed value */
    public static ServerOptions parse(String... args) {
        int port = 0;
        InetAddress bind = InetAddress.getLoopbackAddress();
        Path nodeDir = NodeDirectory.defaultPath();
        boolean marketplace = true;
        long seed = DEFAULT_SEED;
        ModelConfig model = ModelConfig.demo();
        int chunkTokens = DEFAULT_CHUNK_TOKENS;
        int threads = Runtime.getRuntime().availableProcessors();
        for (int i = 0; i < args.length; i += 2) {
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException("flag " + args[i] + " needs a value");
            }
            String value = args[i + 1];
            try {
                switch (args[i]) {
                    case "--port" -> port = Integer.parseInt(value);
                    case "--bind" -> bind = address(value);
                    case "--node-dir" -> nodeDir = Path.of(value);
                    case "--marketplace" -> marketplace = switch (value) {
                        case "on" -> true;
                        case "off" -> false;
                        default -> throw new IllegalArgumentException("--marketplace takes on or off, not " + value);
                    };
                    case "--seed" -> seed = Long.parseLong(value);
                    case "--model" -> model = ModelConfig.named(value);
                    case "--chunk-tokens" -> chunkTokens = Integer.parseInt(value);
                    case "--threads" -> threads = Integer.parseInt(value);
                    default -> throw new IllegalArgumentException("unknown flag " + args[i]);
                }
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(args[i] + " takes a number, not " + value);
            }
        }
        return new ServerOptions(port, bind,
                new EngineOptions(model, seed, nodeDir, marketplace, chunkTokens, threads));
    }

    /** An IPv4 or IPv6 literal of one host: no name lookup, no shorthand ({@code 10.1}), no multicast. */
    private static InetAddress address(String value) {
        Matcher v4 = IPV4.matcher(value);
        boolean literal = v4.matches() ? IntStream.rangeClosed(1, 4).allMatch(g -> Integer.parseInt(v4.group(g)) <= 255)
                : IPV6.matcher(value).matches();
        if (!literal) {
            throw new IllegalArgumentException("--bind takes an IPv4 or IPv6 address, not '" + value + "'");
        }
        try {
            InetAddress a = InetAddress.getByName(value);
            if (a.isMulticastAddress()) {
                throw new IllegalArgumentException("--bind takes a unicast address, not multicast " + value);
            }
            return a;
        } catch (UnknownHostException e) {
            throw new IllegalArgumentException("--bind takes an IPv4 or IPv6 address, not '" + value + "'", e);
        }
    }

    /** The flags that {@link #parse} turns back into these options. */
    public List<String> toArgs() {
        return List.of("--port", String.valueOf(port), "--bind", bind.getHostAddress(),
                "--node-dir", engine.nodeDir().toString(),
                "--marketplace", engine.marketplace() ? "on" : "off", "--seed", String.valueOf(engine.seed()),
                "--model", engine.model().name(), "--chunk-tokens", String.valueOf(engine.chunkTokens()),
                "--threads", String.valueOf(engine.threads()));
    }
}
