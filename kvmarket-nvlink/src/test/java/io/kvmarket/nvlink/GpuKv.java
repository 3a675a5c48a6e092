package io.kvmarket.nvlink;

import io.kvmarket.kv.DType;
import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.LayoutOrder;
import io.kvmarket.key.Namespace;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.KvFixture;
import org.bytedeco.javacpp.BytePointer;

import static org.bytedeco.cuda.global.cudart.cudaDeviceSynchronize;
import static org.bytedeco.cuda.global.cudart.cudaMemcpy;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyDeviceToHost;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyHostToDevice;
import static org.bytedeco.cuda.global.cudart.cudaSuccess;

/** GPU engines for tests: the testkit's fixture on a CUDA device, reading and writing its memory by cudaMemcpy. */
final class GpuKv {

    static final KvLayout LAYOUT = KvLayout.of(2, 2, 64, DType.BFLOAT16, 16, LayoutOrder.LAYER_MAJOR);
    static final Namespace NS = Namespace.of("gpu-test-model", "rev1", "ids", LAYOUT);

    /**
     * From pageable memory cudaMemcpy returns before the DMA lands, and the device's non-blocking copy stream does
     * not wait for it: writes are complete only after the device synchronizes ({@link DeviceBytes#flush}).
     */
    static final DeviceBytes CUDA = new DeviceBytes() {
        @Override
        public void write(DeviceBuffer buffer, long offset, byte[] bytes) {
            stage((CudaBuffer) buffer, offset, bytes);
        }

        @Override
        public byte[] read(DeviceBuffer buffer, long offset, int length) {
            return download((CudaBuffer) buffer, offset, length);
        }

        @Override
        public void flush() {
            check(cudaDeviceSynchronize());
        }
    };

    private GpuKv() {
    }

    /** An engine on GPU 0 with an export pool of {@code poolChunks} chunks. */
    static KvFixture engine(OfferRegistry registry, int poolChunks) {
        return new KvFixture(new CudaDevice(0), CUDA, true, registry, NS, t -> t,
                b -> b.poolBytes(poolChunks * KvFixture.chunkBytes(LAYOUT, KvFixture.CHUNK)));
    }

    static void upload(CudaBuffer b, long offset, byte[] bytes) {
        stage(b, offset, bytes);
        CUDA.flush();
    }

    private static void stage(CudaBuffer b, long offset, byte[] bytes) {
        check(cudaMemcpy(b.at(offset), new BytePointer(bytes), bytes.length, cudaMemcpyHostToDevice));
    }

    static byte[] download(CudaBuffer b, long offset, int length) {
        BytePointer host = new BytePointer(length);
        check(cudaMemcpy(host, b.at(offset), length, cudaMemcpyDeviceToHost));
        byte[] out = new byte[length];
        host.get(out);
        return out;
    }

    private static void check(int err) {
        if (err != cudaSuccess) {
            throw new IllegalStateException("CUDA call failed: " + CudaRuntime.errorString(err));
        }
    }
}
