/**
 * One native call per import: the batched device-to-device copy of all (source offset, destination
 * offset, length) segments of one import, through {@code cudaMemcpyBatchAsync} or a gather/scatter copy
 * kernel. {@link io.kvmarket.nativecopy.NativeCopy} is the only entry point; it probes CUDA once at class
 * load and reports why it is unavailable instead of failing.
 */
package io.kvmarket.nativecopy;
