// A receiver of VORA's signed webhooks: the push gateway's pushNotification and the telephony side's
// readiness callback (holdUpReady / holdUpNotReady), as docs/mobile-push.md and spec/vora-webhooks.yaml say.
//
//   VORA_PUSH_SECRET=... VORA_HOLDUP_CALLBACK_SECRET=... PORT=8443 java Receiver.java
//
// POST /push takes pushNotification (VORA_PUSH_GATEWAY_URL=http://HOST:PORT/push), POST /readiness the
// readiness signals (VORA_HOLDUP_CALLBACK_URL=http://HOST:PORT/readiness). Each request's signature is
// checked over the raw bytes before anything else (401 if it is not VORA's or is older than 300 s), a
// repeated X-Vora-Delivery is answered 200 without handling it again, and 2xx comes only once the message
// was handled (here: written as a JSON line on stdout), so that VORA retries what was not.
// Java 17, JDK only (com.sun.net.httpserver, javax.crypto).
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

public final class Receiver {
    private static final long TOLERANCE_S = 300;
    private static final int MAX_BODY = 64 * 1024;
    private static final long REMEMBER_MS = 24 * 3600 * 1000L;

    // Delivery ids already handled, oldest first. One process keeps them in memory; several receivers behind
    // a load balancer need a shared store (for example Redis SET NX with an expiry) so a retry reaching another
    // one is dropped too.
    private static final Map<String, Long> HANDLED = new LinkedHashMap<>();
    private static final Set<String> IN_PROGRESS = ConcurrentHashMap.newKeySet();

    record Route(String secret, List<String> events) {}

    public static void main(String[] args) throws IOException {
        var server = HttpServer.create(
                new InetSocketAddress(env("HOST", "127.0.0.1"), Integer.parseInt(env("PORT", "0"))), 64);
        Route push = new Route(env("VORA_PUSH_SECRET", ""), List.of("pushNotification"));
        Route readiness = new Route(env("VORA_HOLDUP_CALLBACK_SECRET", ""), List.of("holdUpReady", "holdUpNotReady"));
        if (push.secret().isEmpty() || readiness.secret().isEmpty()) {
            throw new IllegalStateException("set VORA_PUSH_SECRET and VORA_HOLDUP_CALLBACK_SECRET");
        }
        server.createContext("/push", exchange -> receive(exchange, push));
        server.createContext("/readiness", exchange -> receive(exchange, readiness));
        server.setExecutor(Executors.newFixedThreadPool(8));
        server.start();
        report("{\"listening\":" + server.getAddress().getPort() + "}");
    }

    /** Tell whether X-Vora-Signature is VORA's HMAC-SHA256 of "t." + raw body, made within the tolerance. */
    static boolean isFromVora(String secret, String header, byte[] rawBody, long nowS) {
        String t = null;
        String v1 = null;
        for (String part : (header == null ? "" : header).split(",")) {
            int eq = part.indexOf('=');
            if (eq < 0) continue;
            String name = part.substring(0, eq);
            if (name.equals("t")) t = part.substring(eq + 1);
            if (name.equals("v1")) v1 = part.substring(eq + 1);
        }
        if (t == null || !t.matches("[0-9]{1,12}") || Math.abs(nowS - Long.parseLong(t)) > TOLERANCE_S) return false;
        if (v1 == null || !v1.matches("[0-9a-f]{64}")) return false;
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(secret.getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
            mac.update((t + ".").getBytes(StandardCharsets.US_ASCII));
            byte[] expected = mac.doFinal(rawBody);
            // MessageDigest.isEqual compares in constant time (for arrays of equal length, as both are here).
            return MessageDigest.isEqual(expected, HexFormat.of().parseHex(v1));
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException(e);
        }
    }

    static void receive(HttpExchange exchange, Route route) throws IOException {
        try (exchange) {
            if (!exchange.getRequestMethod().equals("POST")) {
                answer(exchange, 405);
                return;
            }
            byte[] raw; // verify these exact bytes: re-serialised JSON would not match
            try (InputStream in = exchange.getRequestBody()) {
                raw = in.readNBytes(MAX_BODY + 1);
            }
            if (raw.length > MAX_BODY) {
                answer(exchange, 413);
                return;
            }
            var headers = exchange.getRequestHeaders();
            if (!isFromVora(route.secret(), headers.getFirst("X-Vora-Signature"), raw,
                    System.currentTimeMillis() / 1000)) {
                report("{\"refused\":401,\"path\":" + quote(exchange.getRequestURI().getPath()) + "}");
                answer(exchange, 401);
                return;
            }
            String event = String.valueOf(headers.getFirst("X-Vora-Event"));
            String delivery = String.valueOf(headers.getFirst("X-Vora-Delivery"));
            if (!route.events().contains(event)) {
                answer(exchange, 400);
                return;
            }
            if (alreadyHandled(delivery)) {
                report("{\"duplicate\":" + quote(delivery) + ",\"event\":" + quote(event) + "}");
                answer(exchange, 200); // handled before: 2xx so that VORA stops retrying it
                return;
            }
            if (!IN_PROGRESS.add(delivery)) {
                // VORA gave up waiting on the first attempt (VORA_PUSH_TIMEOUT) while it is still being handled.
                answer(exchange, 503);
                return;
            }
            try {
                handle(event, delivery, new String(raw, StandardCharsets.UTF_8));
                synchronized (HANDLED) {
                    HANDLED.put(delivery, System.currentTimeMillis());
                }
            } catch (RuntimeException e) {
                report("{\"failed\":" + quote(delivery) + "}");
                answer(exchange, 500); // VORA retries 5xx with the same delivery id
                return;
            } finally {
                IN_PROGRESS.remove(delivery);
            }
            answer(exchange, 204);
        }
    }

    /** Act on a verified message: hand a push to APNs/FCM, resume or release a held call. Here: report it. */
    static void handle(String event, String delivery, String body) {
        // A JSON string holds no raw line break, so this keeps the body as it is, on one line.
        String oneLine = body.replace('\n', ' ').replace('\r', ' ');
        report("{\"handled\":" + quote(event) + ",\"delivery\":" + quote(delivery) + ",\"body\":" + oneLine + "}");
    }

    static boolean alreadyHandled(String delivery) {
        long now = System.currentTimeMillis();
        synchronized (HANDLED) {
            // Insertion order is time order: stop at the first one young enough to keep.
            var oldest = HANDLED.entrySet().iterator();
            while (oldest.hasNext() && now - oldest.next().getValue() >= REMEMBER_MS) oldest.remove();
            return HANDLED.containsKey(delivery);
        }
    }

    static void answer(HttpExchange exchange, int status) throws IOException {
        exchange.sendResponseHeaders(status, -1);
    }

    static String quote(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') out.append('\\').append(c);
            else if (c < 0x20) out.append(String.format("\\u%04x", (int) c));
            else out.append(c);
        }
        return out.append('"').toString();
    }

    static synchronized void report(String line) {
        System.out.println(line);
        System.out.flush();
    }

    static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }
}
