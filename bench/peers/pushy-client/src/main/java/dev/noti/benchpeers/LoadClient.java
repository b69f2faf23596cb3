package dev.noti.benchpeers;

import com.eatthepath.pushy.apns.ApnsClient;
import com.eatthepath.pushy.apns.ApnsClientBuilder;
import com.eatthepath.pushy.apns.DeliveryPriority;
import com.eatthepath.pushy.apns.PushType;
import com.eatthepath.pushy.apns.auth.ApnsSigningKey;
import com.eatthepath.pushy.apns.util.SimpleApnsPushNotification;
import io.netty.channel.nio.NioEventLoopGroup;

import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.security.Security;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A load client for bench/bench_peers.py on Pushy's ApnsClient: token auth, N connections, M
 * notifications in flight, K notifications to one URL, trusting one CA. After a warm-up it prints
 * "ready", waits for a line on stdin, sends, and prints one JSON line: {"sent", "ok", "seconds"}.
 *
 * <pre>
 * --url https://127.0.0.1:2197 --ca ca.pem --key AuthKey.p8 --key-id KID --team-id TEAM
 * --topic com.example.app --payload payload.json --connections 2 --concurrency 1000 --count 20000 --warmup 500
 * </pre>
 */
public final class LoadClient {

    private LoadClient() {
    }

    public static void main(final String[] args) throws Exception {
        final Map<String, String> options = new HashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            options.put(args[i], args[i + 1]);
        }
        final URI url = URI.create(required(options, "--url"));
        final int connections = Integer.parseInt(options.getOrDefault("--connections", "2"));
        final int concurrency = Integer.parseInt(options.getOrDefault("--concurrency", "1000"));
        final int count = Integer.parseInt(options.getOrDefault("--count", "20000"));
        final int warmup = Integer.parseInt(options.getOrDefault("--warmup", "500"));
        final String topic = required(options, "--topic");
        final String payload = Files.readString(new File(required(options, "--payload")).toPath(), StandardCharsets.UTF_8);

        // Provider tokens in JWS form, as Apple documents (see JwsSignatures).
        Security.insertProviderAt(new JwsSignatures(), 1);
        final NioEventLoopGroup events = new NioEventLoopGroup(connections);
        final ApnsClient client = new ApnsClientBuilder()
                .setApnsServer(url.getHost(), url.getPort())
                .setTrustedServerCertificateChain(new File(required(options, "--ca")))
                .setSigningKey(ApnsSigningKey.loadFromPkcs8File(new File(required(options, "--key")),
                        required(options, "--team-id"), required(options, "--key-id")))
                .setConcurrentConnections(connections)
                .setEventLoopGroup(events)
                .build();

        if (warmup > 0 && run(client, topic, payload, warmup, concurrency) == 0) {
            System.err.println("pushy-load: the warm-up sent nothing successfully");
            System.exit(1);
        }
        System.out.println("ready");
        System.out.flush();
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8)).readLine();
        final long started = System.nanoTime();
        final long ok = run(client, topic, payload, count, concurrency);
        final double seconds = (System.nanoTime() - started) / 1e9;
        System.out.println("{\"sent\": " + count + ", \"ok\": " + ok + ", \"seconds\": " + seconds + "}");
        System.out.flush();
        client.close().get();
        events.shutdownGracefully().get();
    }

    /** Sends {@code count} notifications with {@code concurrency} in flight; the number accepted. */
    static long run(final ApnsClient client, final String topic, final String payload, final int count,
                    final int concurrency) throws InterruptedException {
        final Semaphore inFlight = new Semaphore(concurrency);
        final CountDownLatch done = new CountDownLatch(count);
        final AtomicLong ok = new AtomicLong();
        for (int i = 0; i < count; i++) {
            inFlight.acquire();
            final SimpleApnsPushNotification notification = new SimpleApnsPushNotification(
                    String.format("%064x", i), topic, payload, null, DeliveryPriority.IMMEDIATE, PushType.ALERT);
            client.sendNotification(notification).whenComplete((response, cause) -> {
                if (cause == null && response.isAccepted()) {
                    ok.incrementAndGet();
                }
                inFlight.release();
                done.countDown();
            });
        }
        done.await();
        return ok.get();
    }

    private static String required(final Map<String, String> options, final String name) {
        final String value = options.get(name);
        if (value == null) {
            throw new IllegalArgumentException("pushy-load: " + name + " is required");
        }
        return value;
    }
}
