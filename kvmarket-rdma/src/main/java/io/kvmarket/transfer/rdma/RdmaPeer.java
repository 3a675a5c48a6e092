package io.kvmarket.transfer.rdma;

import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.TransferFailure;
import io.kvmarket.transfer.tcp.ControlChannel;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.ConnectException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Importer side of {@link RdmaTransport}: the control connection to one exporter and the channels of queue pairs set
 * up through it, at most {@link RdmaConfig#channelsPerPeer} at once, reused while the connection lasts.
 */
final class RdmaPeer {

    private static final Logger LOG = LoggerFactory.getLogger(RdmaPeer.class);

    /** A channel to the peer, valid while the control connection it was set up through is. */
    record Channel(QpChannel channel, ControlChannel.Client client, int remoteFirstQpn) {
    }

    private final RdmaTransport transport;
    private final ControlChannel.Connector connector;
    private final InetSocketAddress control;
    private ControlChannel.Client client;
    private final List<Channel> idle = new ArrayList<>();
    private int checkedOut;
    private long lastUsedNanos = System.nanoTime();
    /** Set once this peer is dropped from the map: it sets up nothing more. */
    private boolean dead;

    RdmaPeer(RdmaTransport transport, ControlChannel.Connector connector, InetSocketAddress control) {
        this.transport = transport;
        this.connector = connector;
        this.control = control;
    }

    /** A channel to this peer, or null when the peer was dropped (take a fresh one from the map). */
    synchronized Channel acquire(RdmaEndpoint source, long deadline) {
        lastUsedNanos = System.nanoTime();
        while (true) {
            if (transport.isClosed()) {
                throw new TransferException(TransferFailure.FAILED, "RDMA transport closed");
            }
            if (dead) {
                return null;
            }
            keepSession();
            if (!idle.isEmpty()) {
                Channel pc = idle.remove(idle.size() - 1);
                checkedOut++;
                return pc;
            }
            if (checkedOut < transport.config().channelsPerPeer()) {
                Channel pc = connectChannel(source);
                checkedOut++;
                return pc;
            }
            long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
            if (left <= 0) {
                throw new TransferException(TransferFailure.FAILED, "all " + transport.config().channelsPerPeer()
                        + " RDMA channels to " + control + " stayed busy until the deadline");
            }
            try {
                wait(left);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new TransferException(TransferFailure.FAILED, "interrupted waiting for an RDMA channel");
            }
        }
    }

    /** One control request on this peer's connection, connecting first when there is none. */
    synchronized byte[] call(byte[] request) throws IOException {
        if (transport.isClosed()) {
            throw new IOException("RDMA transport closed");
        }
        keepSession();
        if (client == null) {
            client = connector.connect(control);
        }
        try {
            return client.call(request);
        } catch (IOException e) {
            dropSession();
            throw e;
        }
    }

    /** Drops a control connection the exporter closed (its queue pairs went with it), pings one idle long. */
    private void keepSession() {
        if (client == null) {
            return;
        }
        boolean gone = client.isClosed();
        long pingAfter = TimeUnit.MILLISECONDS.toNanos(transport.config().control().idleTimeoutMillis()) / 2;
        if (!gone && client.idleNanos() > pingAfter) {
            try {
                gone = client.call(new byte[] {RdmaTransport.PING}).length != 1;
            } catch (IOException e) {
                gone = true;
            }
        }
        if (gone) {
            LOG.debug("control connection to {} ended; setting up afresh", control);
            dropSession();
        }
    }

    private Channel connectChannel(RdmaEndpoint source) {
        try {
            if (client == null) {
                client = connector.connect(control);
            }
        } catch (ConnectException e) {
            throw new TransferException(TransferFailure.SOURCE_GONE, "nothing serves RDMA setup at " + control
                    + " any more (" + e.getMessage() + "): the exporter is gone", e);
        } catch (IOException e) {
            throw new TransferException(TransferFailure.UNREACHABLE, "cannot set up RDMA with " + control + ": "
                    + e.getMessage(), e);
        }
        QpChannel ch = transport.channel(transport.config().queuePairs(), transport.config().sendQueueDepth(), 0, 0);
        try {
            byte[] answer = client.call(QpSetup.of(ch, transport.context()).encode(RdmaTransport.CONNECT, new byte[0]));
            if (answer.length == 0 || answer[0] != RdmaTransport.OK) {
                throw new TransferException(TransferFailure.UNREACHABLE, control + " refused RDMA queue pairs: "
                        + RdmaTransport.why(answer));
            }
            QpSetup remote = QpSetup.decode(ByteBuffer.wrap(answer).position(1));
            transport.connect(ch, remote);
            return new Channel(ch, client, remote.qpns()[0]);
        } catch (IOException e) {
            ch.close();
            dropSession();
            throw new TransferException(TransferFailure.UNREACHABLE, "RDMA setup with " + control + " failed: "
                    + e.getMessage(), e);
        } catch (RuntimeException e) {
            ch.close();
            throw e instanceof TransferException t ? t : new TransferException(TransferFailure.FAILED,
                    "RDMA setup with " + control + " failed: " + e.getMessage(), e);
        }
    }

    synchronized void release(Channel pc, boolean healthy) {
        checkedOut--;
        lastUsedNanos = System.nanoTime();
        if (healthy && !transport.isClosed() && !dead && pc.client() == client) {
            idle.add(pc);
        } else {
            pc.channel().close();
            if (pc.client() == client && client != null) { // the exporter's half would live as long as the session
                try {
                    client.call(ByteBuffer.allocate(5).put(RdmaTransport.RELEASE).putInt(pc.remoteFirstQpn()).array());
                } catch (IOException e) {
                    dropSession();
                }
            }
        }
        notifyAll();
    }

    /** Closes the control connection and the idle channels set up through it. */
    private void dropSession() {
        for (Channel pc : idle) {
            pc.channel().close();
        }
        idle.clear();
        if (client != null) {
            client.close();
            client = null;
        }
    }

    /** True when nothing is checked out and nothing was used for {@code idleNanos}; then it is dropped. */
    synchronized boolean dropIfIdle(long idleNanos) {
        if (checkedOut == 0 && System.nanoTime() - lastUsedNanos >= idleNanos) {
            drop();
            return true;
        }
        return false;
    }

    /** Drops the session and sets up nothing more; channels checked out close as they come back. */
    synchronized void drop() {
        dead = true;
        dropSession();
    }
}
