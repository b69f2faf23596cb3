package dev.noti.pushymock;

import io.netty.handler.codec.http2.DefaultHttp2Headers;
import io.netty.handler.codec.http2.Http2Headers;
import io.netty.util.AsciiString;

import java.io.ByteArrayOutputStream;
import java.math.BigInteger;
import java.util.Base64;

/**
 * Re-encodes a provider token's ES256 signature from JWS form (raw R||S, RFC 7518 section 3.4) to
 * the ASN.1 DER form that Pushy 0.15 verifies. Apple accepts the JWS form, which is what PyJWT (and so
 * Noti) writes; Pushy answers it with 500 InternalServerError. Nothing else about the token changes,
 * so every check (key id, team, signature, age, topic) is still Pushy's own.
 */
final class DerSignatures {

    private static final AsciiString AUTHORIZATION = new AsciiString("authorization");
    private static final String BEARER = "bearer ";
    private static final int RAW_LENGTH = 64; // two 32-byte P-256 integers

    private DerSignatures() {
    }

    /** The headers with the bearer token's signature in DER form; the same object when there is nothing to change. */
    static Http2Headers withDerSignature(final Http2Headers headers) {
        final CharSequence authorization = headers.get(AUTHORIZATION);
        if (authorization == null) {
            return headers;
        }
        final String value = authorization.toString();
        if (!value.startsWith(BEARER)) {
            return headers;
        }
        final String token = reencode(value.substring(BEARER.length()).trim());
        if (token == null) {
            return headers;
        }
        final Http2Headers copy = new DefaultHttp2Headers(false);
        copy.add(headers);
        copy.set(AUTHORIZATION, BEARER + token);
        return copy;
    }

    /** The JWT with a DER signature, or null when it is not a JWT with a raw 64-byte signature. */
    static String reencode(final String jwt) {
        final int dot = jwt.lastIndexOf('.');
        if (dot < 0 || jwt.indexOf('.') == dot) {
            return null;
        }
        final byte[] signature;
        try {
            signature = Base64.getUrlDecoder().decode(jwt.substring(dot + 1));
        } catch (final IllegalArgumentException e) {
            return null; // Pushy itself calls such a token invalid
        }
        if (signature.length != RAW_LENGTH || isDer(signature)) {
            return null;
        }
        return jwt.substring(0, dot + 1) + Base64.getUrlEncoder().withoutPadding().encodeToString(toDer(signature));
    }

    /** DER ECDSA-Sig-Value: SEQUENCE { INTEGER r, INTEGER s }. */
    static byte[] toDer(final byte[] raw) {
        final int half = raw.length / 2;
        final byte[] r = integer(raw, 0, half);
        final byte[] s = integer(raw, half, half);
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(0x30);
        out.write(r.length + s.length); // at most 70: the short length form
        out.writeBytes(r);
        out.writeBytes(s);
        return out.toByteArray();
    }

    private static byte[] integer(final byte[] raw, final int offset, final int length) {
        final byte[] magnitude = new byte[length];
        System.arraycopy(raw, offset, magnitude, 0, length);
        // BigInteger's two's-complement bytes are DER's minimal INTEGER content (a leading 0 when the high bit is set).
        final byte[] content = new BigInteger(1, magnitude).toByteArray();
        final byte[] encoded = new byte[content.length + 2];
        encoded[0] = 0x02;
        encoded[1] = (byte) content.length;
        System.arraycopy(content, 0, encoded, 2, content.length);
        return encoded;
    }

    /** Whether the bytes already are a well-formed DER SEQUENCE of two INTEGERs (a signer that writes DER). */
    static boolean isDer(final byte[] bytes) {
        if (bytes.length < 8 || bytes[0] != 0x30 || (bytes[1] & 0xff) != bytes.length - 2) {
            return false;
        }
        int position = 2;
        for (int i = 0; i < 2; i++) {
            if (position + 2 > bytes.length || bytes[position] != 0x02) {
                return false;
            }
            final int length = bytes[position + 1] & 0xff;
            position += 2 + length;
            if (length == 0 || length > 33 || position > bytes.length) {
                return false;
            }
        }
        return position == bytes.length;
    }
}
