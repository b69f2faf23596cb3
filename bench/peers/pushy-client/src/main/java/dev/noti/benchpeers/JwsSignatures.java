package dev.noti.benchpeers;

import java.security.InvalidKeyException;
import java.security.InvalidParameterException;
import java.security.NoSuchAlgorithmException;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.PublicKey;
import java.security.Signature;
import java.security.SignatureException;
import java.security.SignatureSpi;

/**
 * Makes Pushy 0.15 sign provider tokens in JWS form. Pushy signs with SHA256withECDSA, whose output is
 * ASN.1 DER; a JWT's ES256 signature is raw R||S (RFC 7518 section 3.4), which is what Noti's simulator
 * (PyJWT) verifies. Signing goes to SunEC's P1363 form; verifying (TLS, server certificates) stays DER.
 */
final class JwsSignatures extends Provider {

    private static final long serialVersionUID = 1L;

    JwsSignatures() {
        super("NotiJwsSignatures", "1", "SHA256withECDSA signing in JWS (P1363) form");
        put("Signature.SHA256withECDSA", JwsSha256WithEcdsa.class.getName());
    }

    /** Signs in P1363 form, verifies in DER form. */
    public static final class JwsSha256WithEcdsa extends SignatureSpi {

        private Signature delegate;

        public JwsSha256WithEcdsa() {
        }

        @Override
        protected void engineInitSign(final PrivateKey key) throws InvalidKeyException {
            this.delegate = instance("SHA256withECDSAinP1363Format");
            this.delegate.initSign(key);
        }

        @Override
        protected void engineInitVerify(final PublicKey key) throws InvalidKeyException {
            this.delegate = instance("SHA256withECDSA");
            this.delegate.initVerify(key);
        }

        @Override
        protected void engineUpdate(final byte b) throws SignatureException {
            this.delegate.update(b);
        }

        @Override
        protected void engineUpdate(final byte[] bytes, final int offset, final int length) throws SignatureException {
            this.delegate.update(bytes, offset, length);
        }

        @Override
        protected byte[] engineSign() throws SignatureException {
            return this.delegate.sign();
        }

        @Override
        protected boolean engineVerify(final byte[] signature) throws SignatureException {
            return this.delegate.verify(signature);
        }

        @Override
        @Deprecated
        protected void engineSetParameter(final String param, final Object value) {
            throw new InvalidParameterException(param);
        }

        @Override
        @Deprecated
        protected Object engineGetParameter(final String param) {
            throw new InvalidParameterException(param);
        }

        private static Signature instance(final String algorithm) {
            try {
                return Signature.getInstance(algorithm, "SunEC");
            } catch (final NoSuchAlgorithmException | java.security.NoSuchProviderException e) {
                throw new IllegalStateException(algorithm + " is not in this JDK's SunEC provider", e);
            }
        }
    }
}
