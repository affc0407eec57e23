// A publisher of telephony events to VORA's server API, as docs/server-api.md says a correct one behaves.
//
//   VORA_SERVER_API=http://127.0.0.1:18086/vora/server/v1 VORA_SERVER_API_KEY=... java Publisher.java
//
// Reads one command per line on stdin: an event {"identity", "type", "data", "idempotencyKey"?} or a
// batch {"events": [event, ...]}. Writes one JSON line per retry ({"outcome": "retrying", ...}) and one
// per event once it is settled: published, duplicate (a retry VORA had already stored), refused (fix the
// event: never retried) or failed (gave up after the bounded attempts; the key says what to retry).
// Java 17, JDK only (java.net.http); Json below is the few lines of JSON this needs.
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.UUID;
import java.util.concurrent.ThreadLocalRandom;

public final class Publisher {
    private static final String BASE =
            env("VORA_SERVER_API", "http://127.0.0.1:18086/vora/server/v1").replaceAll("/$", "");
    private static final String KEY = env("VORA_SERVER_API_KEY", "");
    private static final int MAX_ATTEMPTS = Integer.parseInt(env("VORA_PUBLISH_MAX_ATTEMPTS", "6"));
    private static final long BACKOFF_MS = Long.parseLong(env("VORA_PUBLISH_BACKOFF_MS", "200"));
    private static final long MAX_DELAY_MS = 30_000;
    private static final Duration REQUEST_TIMEOUT = Duration.ofSeconds(10);
    private static final HttpClient HTTP =
            HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

    /** What one POST came back with; status 0 when no answer came (refused, reset, timed out). */
    record Answer(int status, String retryAfter, Object body, String error) {
        String message() {
            return body instanceof Map<?, ?> map && map.get("message") instanceof String m ? m : error;
        }
    }

    public static void main(String[] args) throws Exception {
        var stdin = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        // One command at a time, in order: events of one identity must reach VORA in the order they happened.
        for (String line; (line = stdin.readLine()) != null; ) {
            if (line.isBlank()) continue;
            Map<String, Object> command = Json.object(Json.parse(line));
            if (command.get("events") instanceof List<?> events) {
                publishBatch(events.stream().map(Json::object).toList());
            } else {
                publishOne(command);
            }
        }
    }

    /** Publish one event; retry 503s and lost connections with the same key; never retry a refusal. */
    static void publishOne(Map<String, Object> command) throws InterruptedException {
        Map<String, Object> event = keyed(command);
        String identity = (String) event.remove("identity");
        String key = (String) event.get("idempotencyKey");
        String path = "/identities/" + URLEncoder.encode(identity, StandardCharsets.UTF_8) + "/events";
        for (int attempt = 0; ; attempt++) {
            Answer answer = post(path, event);
            if (answer.status() == 200 || answer.status() == 201) {
                Map<String, Object> body = Json.object(answer.body());
                String outcome = Boolean.TRUE.equals(body.get("duplicate")) ? "duplicate" : "published";
                report(line("outcome", outcome, "idempotencyKey", key, "eventId", body.get("eventId"),
                        "sequenceNumber", body.get("sequenceNumber")));
                return;
            }
            if (!retryable(answer.status())) {
                // 400 (the event is wrong), 401 (the key is), 409 (the key was used for another event).
                report(line("outcome", "refused", "idempotencyKey", key, "status", answer.status(),
                        "message", answer.message()));
                return;
            }
            if (attempt + 1 >= MAX_ATTEMPTS) {
                report(line("outcome", "failed", "idempotencyKey", key, "status", answer.status()));
                return;
            }
            long waitMs = delayMs(attempt, answer.retryAfter());
            report(line("outcome", "retrying", "idempotencyKey", key, "status", answer.status(),
                    "reason", answer.message(), "waitMs", waitMs));
            Thread.sleep(waitMs);
        }
    }

    /** Publish a batch; retry the whole batch on 503 and the items answered 503 alone, each with its own key. */
    static void publishBatch(List<Map<String, Object>> events) throws InterruptedException {
        List<Integer> pending = new ArrayList<>();
        List<Map<String, Object>> keyedEvents = new ArrayList<>();
        for (int i = 0; i < events.size(); i++) {
            pending.add(i);
            keyedEvents.add(keyed(events.get(i)));
        }
        Map<Integer, Map<String, Object>> settled = new TreeMap<>();
        for (int attempt = 0; !pending.isEmpty(); attempt++) {
            Answer answer = post("/events/batch", Map.of("events", pending.stream().map(keyedEvents::get).toList()));
            List<Integer> again = new ArrayList<>();
            // The batch's own status and reason, or, when it was answered 200, those of the items refused for now.
            int status = answer.status();
            String reason = answer.message();
            if (answer.status() == 200) {
                Set<String> reasons = new LinkedHashSet<>();
                List<?> results = (List<?>) Json.object(answer.body()).get("results");
                for (int position = 0; position < results.size(); position++) {
                    Map<String, Object> result = Json.object(results.get(position));
                    int index = pending.get(position);
                    Object key = keyedEvents.get(index).get("idempotencyKey");
                    String itemStatus = (String) result.get("status");
                    if (itemStatus.equals("published") || itemStatus.equals("duplicate")) {
                        settled.put(index, line("outcome", itemStatus, "index", index, "idempotencyKey", key,
                                "eventId", result.get("eventId")));
                    } else {
                        Map<String, Object> error = Json.object(result.get("error"));
                        if ("503".equals(error.get("status"))) {
                            again.add(index); // this item alone was not stored: retry it with its key
                            reasons.add((String) error.get("message"));
                        } else {
                            settled.put(index, line("outcome", "refused", "index", index, "idempotencyKey", key,
                                    "status", Integer.parseInt((String) error.get("status")),
                                    "message", error.get("message")));
                        }
                    }
                }
                status = 503;
                reason = String.join("; ", reasons);
            } else if (retryable(answer.status())) {
                again.addAll(pending);
            } else {
                for (int index : pending) {
                    settled.put(index, line("outcome", "refused", "index", index, "idempotencyKey",
                            keyedEvents.get(index).get("idempotencyKey"), "status", answer.status(),
                            "message", answer.message()));
                }
            }
            if (!again.isEmpty() && attempt + 1 >= MAX_ATTEMPTS) {
                for (int index : again) {
                    settled.put(index, line("outcome", "failed", "index", index, "idempotencyKey",
                            keyedEvents.get(index).get("idempotencyKey"), "status", status));
                }
                again.clear();
            }
            if (!again.isEmpty()) {
                long waitMs = delayMs(attempt, answer.retryAfter());
                report(line("outcome", "retrying", "indexes", again, "status", status,
                        "reason", reason, "waitMs", waitMs));
                Thread.sleep(waitMs);
            }
            pending = again;
        }
        settled.values().forEach(Publisher::report);
    }

    /** Tell whether a publish may be sent again: VORA's 503, a proxy's 502/504, or no answer at all. */
    static boolean retryable(int status) {
        // 502 and 504 come from a load balancer in front of VORA: the publish may have arrived, the key makes it safe.
        return status == 503 || status == 502 || status == 504 || status == 0;
    }

    /** Give an event the idempotencyKey it keeps on every retry. */
    static Map<String, Object> keyed(Map<String, Object> event) {
        Map<String, Object> copy = new LinkedHashMap<>(event);
        copy.putIfAbsent("idempotencyKey", UUID.randomUUID().toString());
        return copy;
    }

    /** Wait Retry-After when VORA sent one, never less than the jittered exponential backoff of this attempt. */
    static long delayMs(int attempt, String retryAfter) {
        long backoff = Math.min(MAX_DELAY_MS, BACKOFF_MS << Math.min(attempt, 20));
        // Half fixed, half random: publishers that failed together do not all come back in the same instant.
        long jittered = backoff / 2 + ThreadLocalRandom.current().nextLong(backoff / 2 + 1);
        long asked = 0;
        if (retryAfter != null && retryAfter.matches("[0-9]{1,6}")) asked = Long.parseLong(retryAfter) * 1000;
        return Math.max(jittered, asked);
    }

    static Answer post(String path, Object body) {
        HttpRequest request = HttpRequest.newBuilder(URI.create(BASE + path))
                .timeout(REQUEST_TIMEOUT)
                .header("Authorization", "Bearer " + KEY)
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(Json.write(body)))
                .build();
        try {
            HttpResponse<String> response = HTTP.send(request, HttpResponse.BodyHandlers.ofString());
            String text = response.body();
            Object parsed = null;
            try {
                parsed = text.isEmpty() ? null : Json.parse(text);
            } catch (RuntimeException notJson) {
                // Not VORA's JSON: a proxy's error page, say. The status still says what happened.
            }
            return new Answer(response.statusCode(), response.headers().firstValue("Retry-After").orElse(null),
                    parsed, null);
        } catch (IOException e) {
            // Refused, reset or timed out: VORA may or may not have stored it, so the retry keeps the same key.
            return new Answer(0, null, null, e.getClass().getSimpleName());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return new Answer(0, null, null, "interrupted");
        }
    }

    static Map<String, Object> line(Object... pairs) {
        Map<String, Object> map = new LinkedHashMap<>();
        for (int i = 0; i < pairs.length; i += 2) map.put((String) pairs[i], pairs[i + 1]);
        return map;
    }

    static void report(Map<String, Object> outcome) {
        System.out.println(Json.write(outcome));
        System.out.flush();
    }

    static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }

    /** Just enough JSON: objects, arrays, strings, numbers, booleans and null, both ways. */
    static final class Json {
        private final String text;
        private int at;

        private Json(String text) {
            this.text = text;
        }

        static Object parse(String text) {
            Json parser = new Json(text);
            Object value = parser.value();
            parser.space();
            if (parser.at != text.length()) throw new IllegalArgumentException("trailing characters at " + parser.at);
            return value;
        }

        @SuppressWarnings("unchecked")
        static Map<String, Object> object(Object value) {
            if (value instanceof Map<?, ?> map) return (Map<String, Object>) map;
            throw new IllegalArgumentException("not a JSON object: " + value);
        }

        private void space() {
            while (at < text.length() && " \t\r\n".indexOf(text.charAt(at)) >= 0) at++;
        }

        private Object value() {
            space();
            char c = text.charAt(at);
            if (c == '{') {
                Map<String, Object> map = new LinkedHashMap<>();
                at++;
                space();
                if (text.charAt(at) == '}') { at++; return map; }
                while (true) {
                    space();
                    String name = string();
                    space();
                    expect(':');
                    map.put(name, value());
                    space();
                    if (text.charAt(at++) == '}') return map;
                }
            }
            if (c == '[') {
                List<Object> list = new ArrayList<>();
                at++;
                space();
                if (text.charAt(at) == ']') { at++; return list; }
                while (true) {
                    list.add(value());
                    space();
                    if (text.charAt(at++) == ']') return list;
                }
            }
            if (c == '"') return string();
            for (String word : new String[] {"true", "false", "null"}) {
                if (text.startsWith(word, at)) {
                    at += word.length();
                    return word.equals("null") ? null : Boolean.valueOf(word);
                }
            }
            int start = at;
            while (at < text.length() && "+-0123456789.eE".indexOf(text.charAt(at)) >= 0) at++;
            String number = text.substring(start, at);
            if (number.isEmpty()) throw new IllegalArgumentException("unexpected character at " + start);
            return number.matches("-?[0-9]+") ? (Object) Long.valueOf(number) : (Object) Double.valueOf(number);
        }

        private void expect(char c) {
            if (text.charAt(at++) != c) throw new IllegalArgumentException("expected " + c + " at " + (at - 1));
        }

        private String string() {
            expect('"');
            StringBuilder out = new StringBuilder();
            while (true) {
                char c = text.charAt(at++);
                if (c == '"') return out.toString();
                if (c != '\\') { out.append(c); continue; }
                char e = text.charAt(at++);
                switch (e) {
                    case 'b' -> out.append('\b');
                    case 'f' -> out.append('\f');
                    case 'n' -> out.append('\n');
                    case 'r' -> out.append('\r');
                    case 't' -> out.append('\t');
                    case 'u' -> { out.append((char) Integer.parseInt(text.substring(at, at + 4), 16)); at += 4; }
                    default -> out.append(e);
                }
            }
        }

        static String write(Object value) {
            if (value == null) return "null";
            if (value instanceof String s) return quote(s);
            if (value instanceof Number || value instanceof Boolean) return value.toString();
            if (value instanceof Map<?, ?> map) {
                List<String> members = new ArrayList<>();
                map.forEach((k, v) -> members.add(quote((String) k) + ":" + write(v)));
                return "{" + String.join(",", members) + "}";
            }
            if (value instanceof List<?> list) {
                return "[" + String.join(",", list.stream().map(Json::write).toList()) + "]";
            }
            throw new IllegalArgumentException("cannot write " + value.getClass());
        }

        private static String quote(String s) {
            StringBuilder out = new StringBuilder("\"");
            for (char c : s.toCharArray()) {
                switch (c) {
                    case '"' -> out.append("\\\"");
                    case '\\' -> out.append("\\\\");
                    case '\n' -> out.append("\\n");
                    case '\r' -> out.append("\\r");
                    case '\t' -> out.append("\\t");
                    default -> {
                        if (c < 0x20) out.append(String.format("\\u%04x", (int) c));
                        else out.append(c);
                    }
                }
            }
            return out.append('"').toString();
        }
    }
}
