// Fills a ledger topic for bench/ledger_scale.py, fast: aiokafka's send() manages ~11k records/s
// on this machine, so 7 M entries would take ten minutes; the Java producer with large batches
// is limited by the broker instead.
//
// Entry i is a pure function of i and the time arguments, and ledger_scale.py holds the same
// function in Python (entry_records): this program writes the JSON that
// service.adapters.ledger_codec.encode_entry writes for that entry, byte for byte. The script
// checks a sample (--dry-run) with the tree's own codec before anything is produced, and feeds
// records it encoded itself through --stdin when the check fails (a codec that changed).
//
// Compiled and run by ledger_scale.py:
//   javac -d OUT -cp "$KAFKA/libs/*" bench/LedgerGen.java
//   java -cp "OUT:$KAFKA/libs/*" LedgerGen --bootstrap HOST:PORT --topic T --first 0 --count N \
//       --base-index 0 --base-ms MS --step-us US --open-ms MS [--rich] [--history]
//       [--small-batches] [--set producer.setting=value ...] [--dry-run | --stdin]
// Output (--dry-run, and the input of --stdin): records framed as
// int key length, key, int value length, value, long timestamp (ms), big-endian.
// Last line on stderr: {"records": n, "bytes": n, "seconds": s, "topic_bytes": n}.

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.ReplicaInfo;
import org.apache.kafka.clients.producer.Callback;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class LedgerGen {
    // Keep in step with ledger_scale.py (the constants of the same names there).
    static final String SOURCE_TOPIC = "lynx.requests";
    static final int SOURCE_PARTITIONS = 12;
    static final long KEY_A = 0x1000_0000_0000_0001L;
    static final long KEY_B = 0x2000_0000_0000_0003L;
    static final long FAL_A = 0x3000_0000_0000_0005L;
    static final long FAL_B = 0x4000_0000_0000_0007L;
    static final long AUX = 0x5000_0000_0000_0009L;
    static final long DIGEST = 0x6000_0000_0000_000BL;
    static final String[] TENANTS = {"acme", "globex", "initech", "umbrella", "hooli"};
    static final String[] WRITERS = {
        "lynx-relay-7d9f8b6c4-2xkqz:1:3f9a2c1b",
        "lynx-relay-7d9f8b6c4-9bq7m:1:a40c77e2",
        "lynx-relay-7d9f8b6c4-tw5rd:1:0be19d53",
        "lynx-relay-7d9f8b6c4-2xkqz:1:c6d2f8a0",
    };
    static final String[] CAMPAIGNS = {"spring", "retarget", "organic"};
    static final String[] SHAPES = {"None|None|None|None", "720p|16:9|None|None", "480p|9:16|121|30"};
    static final String FAL_BASE = "https://queue.fal.run/fal-ai/lynx/requests/";
    static final char[] HEX = "0123456789abcdef".toCharArray();
    static final Properties OVERRIDES = new Properties();

    // The kinds, by (i * 7919) % 10000 (a permutation of each block of 10,000 indices, so any
    // 10,000 consecutive entries hold every kind in the same proportions).
    static final int SUBMITTED = 0, INTENT = 1, REJECTED = 2, FAILED = 3, CANCELLED = 4, SUCCEEDED = 5;

    static int kind(long i) {
        long m = (i * 7919L) % 10000L;
        if (m < 10) return SUBMITTED; // 0.1 %: jobs at fal
        if (m < 11) return INTENT; // 0.01 %: submits whose answer is not recorded yet
        if (m < 61) return REJECTED; // 0.5 %: dead-lettered messages
        if (m < 261) return FAILED; // 2 %
        if (m < 311) return CANCELLED; // 0.5 %
        return SUCCEEDED;
    }

    // splitmix64's finalizer: a bijection of 64-bit words, so keys of distinct i rarely collide.
    static long mix64(long z) {
        z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
        z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
        return z ^ (z >>> 31);
    }

    static void hex(StringBuilder out, long v, int digits) {
        for (int shift = (digits - 1) * 4; shift >= 0; shift -= 4) {
            out.append(HEX[(int) ((v >>> shift) & 0xF)]);
        }
    }

    // A version 4 UUID's text, as Python's str(uuid.UUID(int=...)) writes it.
    static String uuid(long i, long a, long b) {
        long hi = (mix64(i + a) & 0xFFFF_FFFF_FFFF_0FFFL) | 0x0000_0000_0000_4000L;
        long lo = (mix64(i + b) & 0x3FFF_FFFF_FFFF_FFFFL) | 0x8000_0000_0000_0000L;
        StringBuilder s = new StringBuilder(36);
        hex(s, hi >>> 32, 8);
        s.append('-');
        hex(s, hi >>> 16, 4);
        s.append('-');
        hex(s, hi, 4);
        s.append('-');
        hex(s, lo >>> 48, 4);
        s.append('-');
        hex(s, lo, 12);
        return s.toString();
    }

    static void two(StringBuilder out, int v) {
        out.append((char) ('0' + v / 10)).append((char) ('0' + v % 10));
    }

    // service.messages.format_timestamp: UTC, milliseconds, a Z.
    static void timestamp(StringBuilder out, long ms) {
        long seconds = Math.floorDiv(ms, 1000L);
        int millis = (int) Math.floorMod(ms, 1000L);
        long day = Math.floorDiv(seconds, 86400L);
        int second = (int) Math.floorMod(seconds, 86400L);
        LocalDate date = LocalDate.ofEpochDay(day);
        out.append('"').append(date.getYear()).append('-');
        two(out, date.getMonthValue());
        out.append('-');
        two(out, date.getDayOfMonth());
        out.append('T');
        two(out, second / 3600);
        out.append(':');
        two(out, second / 60 % 60);
        out.append(':');
        two(out, second % 60);
        out.append('.');
        out.append((char) ('0' + millis / 100)).append((char) ('0' + millis / 10 % 10));
        out.append((char) ('0' + millis % 10)).append("Z\"");
    }

    // A float of whole milliseconds as Python's repr writes it ("61.234", "61.2", "61.0").
    static String seconds(long ms) {
        StringBuilder s = new StringBuilder().append(ms / 1000).append('.');
        int frac = (int) (ms % 1000);
        if (frac == 0) return s.append('0').toString();
        String digits = String.valueOf(1000 + frac).substring(1);
        int end = digits.length();
        while (digits.charAt(end - 1) == '0') end--;
        return s.append(digits, 0, end).toString();
    }

    static void string(StringBuilder out, String name, String value) {
        out.append(",\"").append(name).append("\":");
        if (value == null) out.append("null");
        else out.append('"').append(value).append('"');
    }

    static final class Spec {
        long baseIndex, baseMs, stepUs, openMs;
        boolean rich, history;

        long closedAt(long i) {
            return baseMs + Math.floorDiv((i - baseIndex) * stepUs, 1000L);
        }
    }

    record Out(String key, byte[] value, long timestamp) {}

    // One ledger value, as encode_entry writes it: every field in its order, optional ones
    // (digest, fal_request_id, units, amount) only when set.
    static byte[] value(
            String state, String writer, long i, long at, String falId, Long receivedMs,
            String metadata, String status, String shape, String runS, String tenant,
            String digest, String falRequestId, String units, String amount) {
        StringBuilder b = new StringBuilder(480);
        b.append("{\"v\":1,\"state\":\"").append(state).append("\",\"writer\":\"").append(writer);
        b.append("\",\"source\":{\"topic\":\"").append(SOURCE_TOPIC).append("\",\"partition\":");
        b.append(i % SOURCE_PARTITIONS).append(",\"offset\":").append(i / SOURCE_PARTITIONS);
        b.append("},\"at\":");
        timestamp(b, at);
        b.append(",\"fal\":");
        if (falId == null) {
            b.append("null");
        } else {
            String url = FAL_BASE + falId;
            b.append("{\"request_id\":\"").append(falId).append("\",\"status_url\":\"").append(url);
            b.append("/status\",\"response_url\":\"").append(url).append("\",\"cancel_url\":\"");
            b.append(url).append("/cancel\"}");
        }
        b.append(",\"received_at\":");
        if (receivedMs == null) b.append("null");
        else timestamp(b, receivedMs);
        b.append(",\"metadata\":").append(metadata == null ? "null" : metadata);
        b.append(",\"deadline\":null");
        string(b, "status", status);
        string(b, "shape", shape);
        b.append(",\"run_s\":").append(runS == null ? "null" : runS);
        string(b, "tenant", tenant);
        if (digest != null) string(b, "digest", digest);
        if (falRequestId != null) string(b, "fal_request_id", falRequestId);
        if (units != null) b.append(",\"units\":").append(units);
        if (amount != null) b.append(",\"amount\":").append(amount);
        b.append('}');
        return b.toString().getBytes(StandardCharsets.UTF_8);
    }

    // The records of entry i, oldest first: one, or (--history) a job's intent and submitted
    // entries before its finished one, as the relay writes them under one key.
    static void records(Spec spec, long i, List<Out> out) {
        int kind = kind(i);
        long aux = mix64(i + AUX) >>> 1;
        String writer = WRITERS[(int) ((aux >>> 12) % WRITERS.length)];
        if (kind == REJECTED) {
            String key = "source:" + SOURCE_TOPIC + ":" + (i % SOURCE_PARTITIONS) + ":"
                    + (i / SOURCE_PARTITIONS);
            long at = spec.closedAt(i);
            out.add(new Out(key, value("rejected", writer, i, at, null, null, null, null, null, null,
                    null, null, null, null, null), at));
            return;
        }
        String key = uuid(i, KEY_A, KEY_B);
        String tenant = TENANTS[(int) ((aux >>> 8) % TENANTS.length)];
        String metadata = "{\"user\":\"u" + ((aux >>> 24) % 100000) + "\",\"campaign\":\""
                + CAMPAIGNS[(int) ((aux >>> 40) % CAMPAIGNS.length)] + "\"}";
        String falId = uuid(i, FAL_A, FAL_B);
        if (kind == SUBMITTED || kind == INTENT) {
            // Jobs still open were submitted within the last hour.
            long at = spec.openMs - aux % 3_600_000L;
            long received = at - 1500 - (aux >>> 20) % 5000;
            out.add(open(kind, writer, i, at, received, metadata, tenant, falId, digest(i), key));
            return;
        }
        long at = spec.closedAt(i);
        if (kind == CANCELLED) {
            out.add(new Out(key, value("finished", writer, i, at, null, null, null, "cancelled",
                    null, null, null, null, null, null, null), at));
            return;
        }
        long runMs = 40_000 + aux % 80_000;
        long intentAt = at - runMs - 3000;
        long received = intentAt - (aux >>> 20) % 30_000;
        if (spec.history) {
            out.add(open(INTENT, writer, i, intentAt, received, metadata, tenant, falId, digest(i), key));
            out.add(open(SUBMITTED, writer, i, intentAt + 1500, received, metadata, tenant, falId,
                    null, key));
        }
        Long rich = spec.rich ? received : null;
        String meta = spec.rich ? metadata : null;
        byte[] v = kind == SUCCEEDED
                ? value("finished", writer, i, at, null, rich, meta, "succeeded",
                        SHAPES[(int) ((aux >>> 16) % SHAPES.length)], seconds(runMs), tenant, null,
                        falId, "5.0625", "3.0375")
                : value("finished", writer, i, at, null, rich, meta, "failed", null, null, tenant,
                        null, falId, null, null);
        out.add(new Out(key, v, at));
    }

    static Out open(int kind, String writer, long i, long at, long received, String metadata,
            String tenant, String falId, String digest, String key) {
        byte[] v = kind == SUBMITTED
                ? value("submitted", writer, i, at, falId, received, metadata, null, null, null,
                        tenant, null, null, "5.0625", null)
                : value("intent", writer, i, at, null, received, metadata, null, null, null, tenant,
                        digest, null, "5.0625", null);
        return new Out(key, v, at);
    }

    static String digest(long i) {
        StringBuilder s = new StringBuilder(64);
        for (long n = 0; n < 4; n++) hex(s, mix64(i + DIGEST + n * 0x1_0000_0000L), 16);
        return s.toString();
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> opt = new HashMap<>();
        for (int a = 0; a < args.length; a++) {
            if (args[a].equals("--set")) {
                // A producer setting over the defaults below (for trying other tunings).
                String[] kv = args[++a].split("=", 2);
                OVERRIDES.put(kv[0], kv[1]);
                continue;
            }
            String name = args[a].substring(2);
            boolean flag = a + 1 == args.length || args[a + 1].startsWith("--");
            opt.put(name, flag ? "true" : args[++a]);
        }
        Spec spec = new Spec();
        long first = Long.parseLong(opt.getOrDefault("first", "0"));
        long count = Long.parseLong(opt.getOrDefault("count", "0"));
        spec.baseIndex = Long.parseLong(opt.getOrDefault("base-index", "0"));
        spec.baseMs = Long.parseLong(opt.getOrDefault("base-ms", "0"));
        spec.stepUs = Long.parseLong(opt.getOrDefault("step-us", "1000"));
        spec.openMs = Long.parseLong(opt.getOrDefault("open-ms", "0"));
        spec.rich = opt.containsKey("rich");
        spec.history = opt.containsKey("history");
        long started = System.nanoTime();
        long[] totals = opt.containsKey("dry-run")
                ? dryRun(spec, first, count)
                : produce(opt, spec, first, count);
        double elapsed = (System.nanoTime() - started) / 1e9;
        long topicBytes = opt.containsKey("dry-run") ? 0 : topicBytes(opt);
        System.err.printf("{\"records\": %d, \"bytes\": %d, \"seconds\": %.3f, \"topic_bytes\": %d}%n",
                totals[0], totals[1], elapsed, topicBytes);
    }

    static long[] dryRun(Spec spec, long first, long count) throws IOException {
        long records = 0, bytes = 0;
        List<Out> batch = new ArrayList<>(3);
        try (DataOutputStream out = new DataOutputStream(new BufferedOutputStream(System.out, 1 << 16))) {
            for (long i = first; i < first + count; i++) {
                batch.clear();
                records(spec, i, batch);
                for (Out r : batch) {
                    byte[] key = r.key().getBytes(StandardCharsets.UTF_8);
                    out.writeInt(key.length);
                    out.write(key);
                    out.writeInt(r.value().length);
                    out.write(r.value());
                    out.writeLong(r.timestamp());
                    records++;
                    bytes += key.length + r.value().length;
                }
            }
        }
        return new long[] {records, bytes};
    }

    static long[] produce(Map<String, String> opt, Spec spec, long first, long count) throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, opt.get("bootstrap"));
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        // No compression: the relay's producer sends none either, so the topic's size is its.
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "none");
        // Nothing here needs exactly-once; sequence numbers would only hold the pipeline back.
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false");
        p.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "5");
        p.put(ProducerConfig.BUFFER_MEMORY_CONFIG, String.valueOf(256L << 20));
        p.put(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, String.valueOf(16 << 20));
        if (opt.containsKey("small-batches")) {
            // One record a batch, as the relay's one-entry transactions leave them (without
            // their commit markers).
            p.put(ProducerConfig.BATCH_SIZE_CONFIG, "0");
            p.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        } else {
            // Large batches (the broker's message.max.bytes is ~1 MiB a batch) and a linger
            // that fills them: the producer then costs ~1 µs a record.
            p.put(ProducerConfig.BATCH_SIZE_CONFIG, String.valueOf(512 << 10));
            p.put(ProducerConfig.LINGER_MS_CONFIG, "20");
        }
        p.putAll(OVERRIDES);
        String topic = opt.get("topic");
        AtomicLong failed = new AtomicLong();
        AtomicReference<Exception> firstError = new AtomicReference<>();
        long records = 0, bytes = 0;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            Callback done = (meta, error) -> {
                if (error != null) {
                    failed.incrementAndGet();
                    firstError.compareAndSet(null, error);
                }
            };
            if (opt.containsKey("stdin")) {
                DataInputStream in = new DataInputStream(new BufferedInputStream(System.in, 1 << 20));
                while (true) {
                    int keyLength;
                    try {
                        keyLength = in.readInt();
                    } catch (EOFException end) {
                        break;
                    }
                    byte[] key = in.readNBytes(keyLength);
                    byte[] value = in.readNBytes(in.readInt());
                    long ts = in.readLong();
                    producer.send(new ProducerRecord<>(topic, null, ts, key, value), done);
                    records++;
                    bytes += key.length + value.length;
                }
            } else {
                List<Out> batch = new ArrayList<>(3);
                for (long i = first; i < first + count; i++) {
                    batch.clear();
                    records(spec, i, batch);
                    for (Out r : batch) {
                        byte[] key = r.key().getBytes(StandardCharsets.UTF_8);
                        // The default partitioner hashes the key (murmur2), as aiokafka's does:
                        // each entry lands where the relay would have written it.
                        producer.send(new ProducerRecord<>(topic, null, r.timestamp(), key, r.value()), done);
                        records++;
                        bytes += key.length + r.value().length;
                    }
                }
            }
            producer.flush();
        }
        if (failed.get() > 0) {
            throw new IllegalStateException(failed.get() + " records failed", firstError.get());
        }
        return new long[] {records, bytes};
    }

    // The topic's size in the broker's log directories (what it takes on disk).
    static long topicBytes(Map<String, String> opt) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", opt.get("bootstrap"));
        try (Admin admin = Admin.create(p)) {
            List<Integer> brokers = admin.describeCluster().nodes().get().stream().map(Node::id).toList();
            long total = 0;
            Map<Integer, Map<String, LogDirDescription>> all =
                    admin.describeLogDirs(brokers).allDescriptions().get();
            for (Map<String, LogDirDescription> dirs : all.values()) {
                for (LogDirDescription dir : dirs.values()) {
                    for (Map.Entry<TopicPartition, ReplicaInfo> e : dir.replicaInfos().entrySet()) {
                        if (e.getKey().topic().equals(opt.get("topic"))) total += e.getValue().size();
                    }
                }
            }
            return total;
        }
    }
}
