package io.kvmarket.examples.server;

import io.kvmarket.examples.model.ModelConfig;
import io.kvmarket.node.NodeDirectory;

import java.net.InetAddress;
import java.net.UnknownHostException;
import java.nio.file.Path;
import java.util.List;

/**
 * Command line of {@link InferenceServer}: {@code --port N} (0: any free port), {@code --bind ADDRESS} (loopback by
 * default), {@code --node-dir PATH},
 * {@code --marketplace on|off}, {@code --seed N}, {@code --model demo|tiny}, {@code --chunk-tokens N},
 * {@code --threads N}. Every flag is optional.
 */
public record ServerOptions(int port, InetAddress bind, EngineOptions engine) {

    public static final long DEFAULT_SEED = 1;
    public static final int DEFAULT_CHUNK_TOKENS = 256;

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

    private static InetAddress address(String value) {
        try {
            return InetAddress.getByName(value);
        } catch (UnknownHostException e) {
            throw new IllegalArgumentException("--bind takes an address, not " + value, e);
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
