package io.kvmarket.registry;

/** The registry could not answer (I/O failure, corrupted shared file). Imports turn it into a miss. */
public class RegistryException extends RuntimeException {

    public RegistryException(String message) {
        super(message);
    }

    public RegistryException(String message, Throwable cause) {
        super(message, cause);
    }
}
