package dev.noti.benchpeers;

import com.eatthepath.pushy.apns.server.AcceptAllPushNotificationHandlerFactory;
import com.eatthepath.pushy.apns.server.MockApnsServer;
import com.eatthepath.pushy.apns.server.MockApnsServerBuilder;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.channel.Channel;
import io.netty.channel.group.ChannelGroup;

import java.io.File;
import java.lang.reflect.Field;
import java.net.InetAddress;
import java.net.InetSocketAddress;

/**
 * Pushy's MockApnsServer in accept-all mode on loopback, for bench/bench_peers.py: every notification
 * is answered 200 without checks. Prints {"port": N} as its first stdout line and stops when its
 * standard input closes.
 *
 * <pre>
 * java -cp noti-pushy-peer.jar dev.noti.benchpeers.AcceptAllServer --cert server.pem --key server-pkcs8.pem
 *     [--port 0] [--max-concurrent-streams 1000]
 * </pre>
 */
public final class AcceptAllServer {

    private AcceptAllServer() {
    }

    public static void main(final String[] args) throws Exception {
        File cert = null;
        File key = null;
        int port = 0;
        int maxConcurrentStreams = 1000; // what Apple announces (Pushy's own default is 1500)
        for (int i = 0; i + 1 < args.length; i += 2) {
            switch (args[i]) {
                case "--cert" -> cert = new File(args[i + 1]);
                case "--key" -> key = new File(args[i + 1]);
                case "--port" -> port = Integer.parseInt(args[i + 1]);
                case "--max-concurrent-streams" -> maxConcurrentStreams = Integer.parseInt(args[i + 1]);
                default -> throw new IllegalArgumentException("accept-all server: unknown option " + args[i]);
            }
        }
        if (cert == null || key == null) {
            throw new IllegalArgumentException("accept-all server: --cert and --key are required");
        }
        final MockApnsServer server = new MockApnsServerBuilder()
                .setServerCredentials(cert, key, null)
                .setUseAlpn(true)
                .setMaxConcurrentStreams(maxConcurrentStreams)
                .setHandlerFactory(new AcceptAllPushNotificationHandlerFactory())
                .build();
        // MockApnsServer.start(port) binds every interface; bind its own bootstrap to loopback instead.
        final ServerBootstrap bootstrap = (ServerBootstrap) field(server, "bootstrap");
        final Channel channel = bootstrap.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), port))
                .sync().channel();
        ((ChannelGroup) field(server, "allChannels")).add(channel);
        System.out.println("{\"port\": " + ((InetSocketAddress) channel.localAddress()).getPort() + "}");
        System.out.flush();
        while (System.in.read() != -1) {
            // our parent holds stdin: when it goes, so do we
        }
        server.shutdown().get();
    }

    private static Object field(final Object target, final String name) throws ReflectiveOperationException {
        for (Class<?> type = target.getClass(); type != null; type = type.getSuperclass()) {
            try {
                final Field field = type.getDeclaredField(name);
                field.setAccessible(true);
                return field.get(target);
            } catch (final NoSuchFieldException e) {
                // look in the superclass
            }
        }
        throw new NoSuchFieldException(name + " (the Pushy version differs from the pinned one)");
    }
}
