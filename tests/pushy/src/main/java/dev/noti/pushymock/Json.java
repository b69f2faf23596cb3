package dev.noti.pushymock;

import java.util.Map;

/** Just enough JSON writing for flat objects of strings, numbers and nulls. */
final class Json {

    private Json() {
    }

    static String object(final Map<String, ?> fields) {
        final StringBuilder json = new StringBuilder("{");
        for (final Map.Entry<String, ?> field : fields.entrySet()) {
            if (json.length() > 1) {
                json.append(", ");
            }
            string(json, field.getKey());
            json.append(": ");
            final Object value = field.getValue();
            if (value == null) {
                json.append("null");
            } else if (value instanceof Number || value instanceof Boolean) {
                json.append(value);
            } else {
                string(json, value.toString());
            }
        }
        return json.append('}').toString();
    }

    private static void string(final StringBuilder json, final String value) {
        json.append('"');
        for (int i = 0; i < value.length(); i++) {
            final char c = value.charAt(i);
            if (c == '"' || c == '\\') {
                json.append('\\').append(c);
            } else if (c < 0x20) {
                json.append(String.format("\\u%04x", (int) c));
            } else {
                json.append(c);
            }
        }
        json.append('"');
    }
}
