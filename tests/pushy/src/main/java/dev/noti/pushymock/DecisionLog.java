package dev.noti.pushymock;

import com.eatthepath.pushy.apns.server.MockApnsServerListener;
import com.eatthepath.pushy.apns.server.RejectionReason;
import io.netty.buffer.ByteBuf;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http2.Http2Headers;

import java.io.PrintStream;
import java.lang.reflect.Method;
import java.time.Instant;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Writes each of Pushy's decisions as one JSON line, so tests can compare what a client concluded
 * with what the server decided: {"status", "reason", "timestamp", "device_token", "topic",
 * "push_type", "apns_id", "payload_bytes"}. apns_id is the request's (null when the client sent none).
 */
final class DecisionLog implements MockApnsServerListener {

    private static final String PATH_PREFIX = "/3/device/";

    private final PrintStream out;
    private final Map<RejectionReason, Integer> statuses = new EnumMap<>(RejectionReason.class);

    DecisionLog(final PrintStream out) {
        this.out = out;
        // Pushy keeps each reason's status package-private; it is what the client received, so log it.
        try {
            final Method status = RejectionReason.class.getDeclaredMethod("getHttpResponseStatus");
            status.setAccessible(true);
            for (final RejectionReason reason : RejectionReason.values()) {
                this.statuses.put(reason, ((HttpResponseStatus) status.invoke(reason)).code());
            }
        } catch (final ReflectiveOperationException e) {
            throw new IllegalStateException("this Pushy version has no RejectionReason.getHttpResponseStatus()", e);
        }
    }

    @Override
    public void handlePushNotificationAccepted(final Http2Headers headers, final ByteBuf payload) {
        this.write(headers, payload, 200, null, null);
    }

    @Override
    public void handlePushNotificationRejected(final Http2Headers headers, final ByteBuf payload,
                                               final RejectionReason reason, final Instant expiredAt) {
        this.write(headers, payload, this.statuses.get(reason), reasonText(reason), expiredAt);
    }

    /** BAD_DEVICE_TOKEN → BadDeviceToken: Apple's spelling, which Pushy's enum names follow one to one. */
    static String reasonText(final RejectionReason reason) {
        final StringBuilder text = new StringBuilder();
        for (final String word : reason.name().split("_")) {
            text.append(word.charAt(0)).append(word.substring(1).toLowerCase());
        }
        return text.toString();
    }

    private void write(final Http2Headers headers, final ByteBuf payload, final int status, final String reason,
                       final Instant expiredAt) {
        final Map<String, Object> line = new LinkedHashMap<>();
        line.put("status", status);
        line.put("reason", reason);
        line.put("timestamp", expiredAt == null ? null : expiredAt.toEpochMilli());
        final String path = string(headers.path());
        line.put("device_token", path != null && path.startsWith(PATH_PREFIX) ? path.substring(PATH_PREFIX.length()) : path);
        line.put("topic", string(headers.get("apns-topic")));
        line.put("push_type", string(headers.get("apns-push-type")));
        line.put("apns_id", string(headers.get("apns-id")));
        line.put("payload_bytes", payload == null ? 0 : payload.readableBytes());
        final String json = Json.object(line);
        synchronized (this.out) {
            this.out.println(json);
            this.out.flush();
        }
    }

    private static String string(final CharSequence value) {
        return value == null ? null : value.toString();
    }
}
