package dev.noti.pushymock;

import com.eatthepath.pushy.apns.auth.ApnsVerificationKey;
import com.eatthepath.pushy.apns.server.MockApnsServer;
import com.eatthepath.pushy.apns.server.MockApnsServerBuilder;
import com.eatthepath.pushy.apns.server.ValidatingPushNotificationHandlerFactory;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.channel.Channel;
import io.netty.channel.group.ChannelGroup;

import java.io.File;
import java.io.FileOutputStream;
import java.io.PrintStream;
import java.lang.reflect.Field;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;

/**
 * Starts Pushy's MockApnsServer on loopback with its ValidatingPushNotificationHandlerFactory, prints
 * {"port": N} as its first stdout line, logs every decision (see {@link DecisionLog}) and stops when
 * its standard input closes (the test process that started it is gone) or on SIGTERM.
 *
 * <pre>
 * --cert server.pem --key server-pkcs8.pem      TLS identity (PEM; the key in PKCS#8)
 * --port 0                                     0: any free port
 * --verification-key TEAM:KEYID:public.pem:topic[,topic...]   a token-auth key and the topics it may push to
 * --device-token TOPIC=HEX[,HEX...]            device tokens registered for a topic
 * --expired-token HEX=EPOCH_MILLIS             a token Apple calls Unregistered since that time
 * --decisions decisions.jsonl                  where decisions go (default: stdout, after the port line)
 * --max-concurrent-streams 1000                SETTINGS_MAX_CONCURRENT_STREAMS (default: Pushy's, 1500)
 * </pre>
 */
public final class Main {

    private Main() {
    }

    public static void main(final String[] args) throws Exception {
        File cert = null;
        File key = null;
        int port = 0;
        String decisions = null;
        int maxConcurrentStreams = 0;
        final Map<String, Set<String>> deviceTokensByTopic = new HashMap<>();
        final Map<String, Instant> expiredTokens = new HashMap<>();
        final Map<String, ApnsVerificationKey> keysById = new HashMap<>();
        final Map<ApnsVerificationKey, Set<String>> topicsByKey = new HashMap<>();

        for (int i = 0; i < args.length; i++) {
            final String option = args[i];
            if (i + 1 >= args.length) {
                throw usage(option + " needs a value");
            }
            final String value = args[++i];
            switch (option) {
                case "--cert" -> cert = new File(value);
                case "--key" -> key = new File(value);
                case "--port" -> port = Integer.parseInt(value);
                case "--decisions" -> decisions = value;
                case "--max-concurrent-streams" -> maxConcurrentStreams = Integer.parseInt(value);
                case "--device-token" -> {
                    final String[] parts = split(option, value, "=", 2);
                    deviceTokensByTopic.computeIfAbsent(parts[0], topic -> new HashSet<>())
                            .addAll(Arrays.asList(parts[1].split(",")));
                }
                case "--expired-token" -> {
                    final String[] parts = split(option, value, "=", 2);
                    expiredTokens.put(parts[0], Instant.ofEpochMilli(Long.parseLong(parts[1])));
                }
                case "--verification-key" -> {
                    final String[] parts = split(option, value, ":", 4);
                    final ApnsVerificationKey verificationKey =
                            ApnsVerificationKey.loadFromPkcs8File(new File(parts[2]), parts[0], parts[1]);
                    keysById.put(parts[1], verificationKey);
                    topicsByKey.put(verificationKey, new HashSet<>(Arrays.asList(parts[3].split(","))));
                }
                default -> throw usage("unknown option " + option);
            }
        }
        if (cert == null || key == null) {
            throw usage("--cert and --key are required");
        }

        final PrintStream decisionStream = decisions == null
                ? System.out
                : new PrintStream(new FileOutputStream(decisions, true), true, StandardCharsets.UTF_8);
        final MockApnsServerBuilder builder = new MockApnsServerBuilder();
        if (maxConcurrentStreams > 0) {
            builder.setMaxConcurrentStreams(maxConcurrentStreams);
        }
        final MockApnsServer server = builder
                .setServerCredentials(cert, key, null)
                .setUseAlpn(true) // as Apple does; Pushy leaves it off by default
                .setHandlerFactory(new DerSignatureHandlerFactory(new ValidatingPushNotificationHandlerFactory(
                        deviceTokensByTopic, expiredTokens, keysById, topicsByKey)))
                .setListener(new DecisionLog(decisionStream))
                .generateApnsUniqueId(true)
                .build();
        final int bound = startOnLoopback(server, port);
        final Map<String, Object> started = new LinkedHashMap<>();
        started.put("port", bound);
        started.put("host", InetAddress.getLoopbackAddress().getHostAddress());
        synchronized (System.out) {
            System.out.println(Json.object(started));
            System.out.flush();
        }

        // Our parent holds the other end of stdin: when it goes, so do we (no orphaned servers).
        while (System.in.read() != -1) {
            // discard
        }
        server.shutdown().get();
        decisionStream.flush();
    }

    /**
     * MockApnsServer.start(port) binds every interface; a test server belongs on loopback alone, so bind
     * Pushy's own bootstrap (pipeline, TLS, handlers unchanged) to the loopback address instead.
     */
    static int startOnLoopback(final MockApnsServer server, final int port) throws Exception {
        final ServerBootstrap bootstrap = (ServerBootstrap) field(server, "bootstrap");
        final Channel channel = bootstrap.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), port))
                .sync().channel();
        ((ChannelGroup) field(server, "allChannels")).add(channel); // so shutdown() closes it
        return ((InetSocketAddress) channel.localAddress()).getPort();
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

    private static String[] split(final String option, final String value, final String separator, final int parts) {
        final String[] split = value.split(separator, parts);
        if (split.length != parts) {
            throw usage(option + " " + value + ": expected " + parts + " parts separated by " + separator);
        }
        return split;
    }

    private static IllegalArgumentException usage(final String message) {
        return new IllegalArgumentException("noti-pushy-mock: " + message);
    }
}
