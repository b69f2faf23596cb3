package dev.noti.pushymock;

import com.eatthepath.pushy.apns.server.PushNotificationHandler;
import com.eatthepath.pushy.apns.server.PushNotificationHandlerFactory;

import javax.net.ssl.SSLSession;

/** Hands Pushy's handlers the request with its provider token signature in DER form (see {@link DerSignatures}). */
final class DerSignatureHandlerFactory implements PushNotificationHandlerFactory {

    private final PushNotificationHandlerFactory delegate;

    DerSignatureHandlerFactory(final PushNotificationHandlerFactory delegate) {
        this.delegate = delegate;
    }

    @Override
    public PushNotificationHandler buildHandler(final SSLSession sslSession) {
        final PushNotificationHandler handler = this.delegate.buildHandler(sslSession);
        return (headers, payload) -> handler.handlePushNotification(DerSignatures.withDerSignature(headers), payload);
    }
}
