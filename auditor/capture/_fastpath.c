/* The capture engine's per-packet fast path for classic pcap, in C (optional; see engine.py).
 *
 * Most packets of a capture are bulk data on flows whose handshake is already parsed: all they
 * change is their direction's packet and byte counters and its last_seen. engine._pcap_loop
 * takes them on an inlined fast path in Python; walk() below is the same loop, record for
 * record and rule for rule, so that the engine only runs Python for the packets that need it.
 *
 *   walk(buf, pos, little_endian, ethernet, frac_scale, tcp, udp, newest, next_sweep)
 *       -> (pos, slow, ts, packets, captured, newest, went_back, packet)
 *
 * reads the pcap records of buf from offset pos. Bulk packets of known flows are counted on
 * their Direction (the objects of FlowTable.tcp / FlowTable.udp, looked up by the same key
 * bytes). It stops at the first packet the fast path does not take, or at the first
 * incomplete record: pos is then where to resume (just past that packet, or at the incomplete
 * record), slow the offset of the packet's record header (-1: none, the buffer is used up), ts
 * its timestamp and packet its decoded Packet (None when packets.decode must read the frame: a
 * shape decode_ethernet below does not take, or no slow packet); packets and captured count
 * every record read (the slow one included) and their captured bytes. newest is the latest
 * timestamp so far (passed in from the previous call, returned updated); went_back is true when
 * a record read is older than one before it (the flow table's idle timers rely on time going
 * forward: FlowTable.time_went_back). Timestamps are computed as Python computes them (sec +
 * frac * frac_scale in doubles; setup.py turns off floating-point contraction so no fused
 * multiply-add changes a bit), so both loops give identical observations
 * (tests/test_capture_fastpath.py checks it).
 *
 * The rule (offsets as in engine._pcap_loop): Ethernet with caplen >= 54, optionally one
 * 802.1Q tag, IPv4 with a 20-byte header that is not a fragment, or IPv6 without extension
 * headers (caplen >= 74); TCP without SYN/FIN/RST on a known direction that no longer collects
 * bytes, or a pure ACK; UDP on a known direction that no longer collects.
 *
 * Beyond that rule, walk also does itself what the per-packet path would do with a SYN+ACK or
 * a FIN without data on a known direction when the flow does not end with it (tcp_control),
 * as long as the packet's timestamp is before next_sweep (engine._Engine.next_sweep: from then
 * on the per-packet path runs the idle sweep before the packet, so it must see it). The Python
 * loops leave those packets to the per-packet path: same results, which the tests compare.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include <structmember.h>

static PyObject *name_packets, *name_bytes, *name_last_seen, *name_collecting;
static PyObject *name_flow, *name_closed, *name_client, *name_server, *name_fin, *name_next_seq;
static PyObject *name_keys, *name_from_client;

/* Where Direction keeps the four attributes: it declares __slots__, so each is a pointer at a
 * fixed offset in the object, read and written directly instead of through getattr/setattr
 * (half the cost of a bulk packet). Learned from the first direction seen; any other type
 * goes through getattr/setattr. */
static struct {
    PyTypeObject *type; /* NULL: not learned yet */
    Py_ssize_t packets, bytes, last_seen, collecting;
} slots;
static int slots_tried;

static Py_ssize_t slot_offset(PyTypeObject *type, PyObject *name)
{
    PyObject *descriptor = PyObject_GetAttr((PyObject *)type, name);
    Py_ssize_t offset = -1;
    if (descriptor == NULL) {
        PyErr_Clear();
        return -1;
    }
    if (Py_IS_TYPE(descriptor, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
        if (member->type == T_OBJECT_EX && !(member->flags & READONLY))
            offset = member->offset;
    }
    Py_DECREF(descriptor);
    return offset;
}

static void learn_slots(PyObject *direction)
{
    PyTypeObject *type = Py_TYPE(direction);
    slots_tried = 1;
    slots.packets = slot_offset(type, name_packets);
    slots.bytes = slot_offset(type, name_bytes);
    slots.last_seen = slot_offset(type, name_last_seen);
    slots.collecting = slot_offset(type, name_collecting);
    if (slots.packets >= 0 && slots.bytes >= 0 && slots.last_seen >= 0 && slots.collecting >= 0) {
        Py_INCREF(type); /* kept for the life of the module */
        slots.type = type;
    }
}

static inline PyObject **slot_of(PyObject *obj, Py_ssize_t offset)
{
    return (PyObject **)((char *)obj + offset);
}

/* getattr(obj, name), new reference (NULL with an exception when unset). */
static PyObject *get(PyObject *obj, PyObject *name, Py_ssize_t offset)
{
    if (Py_TYPE(obj) != slots.type)
        return PyObject_GetAttr(obj, name);
    PyObject *value = *slot_of(obj, offset);
    if (value == NULL) {
        PyErr_SetObject(PyExc_AttributeError, name);
        return NULL;
    }
    Py_INCREF(value);
    return value;
}

/* setattr(obj, name, value), stealing the reference to value (which may be NULL: error). */
static int put(PyObject *obj, PyObject *name, Py_ssize_t offset, PyObject *value)
{
    if (value == NULL)
        return -1;
    if (Py_TYPE(obj) != slots.type) {
        int result = PyObject_SetAttr(obj, name, value);
        Py_DECREF(value);
        return result;
    }
    PyObject **slot = slot_of(obj, offset);
    PyObject *old = *slot;
    *slot = value;
    Py_XDECREF(old);
    return 0;
}

static inline uint32_t read_u32(const unsigned char *p, int little_endian)
{
    return little_endian
        ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
        : (uint32_t)p[3] | (uint32_t)p[2] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[0] << 24;
}

/* Flow-table key objects by their bytes, direct-mapped: a bulk packet's key is almost always
 * one seen moments ago, and reusing its bytes object (whose hash is then cached) saves making
 * and hashing a new one per packet, most of the cost of the lookup. Once a key is found in the
 * table, its entry holds the table's own key object, so that the dictionary finds it by
 * identity instead of comparing bytes. Only keys are kept (about 50 bytes each): the table's
 * dictionaries stay the only truth about directions. */
#define KEY_CACHE_BITS 12
static struct {
    unsigned char raw[36];
    Py_ssize_t size;
    PyObject *key;
    /* The direction whose Flow.keys the key was taken from; only compared, never used (a new
     * flow on the same key has a new direction: its key object is taken again). */
    const PyObject *direction;
} key_cache[1 << KEY_CACHE_BITS];
typedef __typeof__(&key_cache[0]) key_entry;

/* The cache entry of a 12- or 36-byte key (IPv4 / IPv6 addresses and ports), filled if it held
 * another key; NULL on error. */
static key_entry key_cache_entry(const unsigned char *raw, Py_ssize_t size)
{
    uint64_t hash = 0;
    for (Py_ssize_t i = 0; i < size; i += 4) {
        uint32_t word;
        memcpy(&word, raw + i, 4);
        hash = (hash ^ word) * 0x9E3779B97F4A7C15u; /* Fibonacci hashing: top bits index */
    }
    key_entry entry = &key_cache[hash >> (64 - KEY_CACHE_BITS)];
    /* Constant sizes: the compiler compares in a few loads instead of calling memcmp. */
    if (entry->key != NULL && entry->size == size
        && (size == 12 ? memcmp(entry->raw, raw, 12) == 0 : memcmp(entry->raw, raw, 36) == 0))
        return entry;
    PyObject *key = PyBytes_FromStringAndSize((const char *)raw, size);
    if (key == NULL)
        return NULL;
    Py_XSETREF(entry->key, key);
    memcpy(entry->raw, raw, size);
    entry->size = size;
    entry->direction = NULL;
    return entry;
}

/* The bytes object for a key, new reference (NULL on error). */
static PyObject *key_object(const unsigned char *raw, Py_ssize_t size)
{
    key_entry entry = key_cache_entry(raw, size);
    if (entry == NULL)
        return NULL;
    Py_INCREF(entry->key);
    return entry->key;
}

/* Have the entry hold the key object under which the table keeps direction (the flow's
 * Flow.keys: client -> server first). 0, or -1 on error. */
static int adopt_table_key(key_entry entry, PyObject *direction)
{
    entry->direction = direction;
    PyObject *flow = PyObject_GetAttr(direction, name_flow);
    PyObject *keys = flow == NULL ? NULL : PyObject_GetAttr(flow, name_keys);
    PyObject *from_client = keys == NULL ? NULL : PyObject_GetAttr(direction, name_from_client);
    Py_XDECREF(flow);
    int result = -1;
    if (from_client != NULL && PyTuple_Check(keys) && PyTuple_GET_SIZE(keys) == 2) {
        PyObject *key = PyTuple_GET_ITEM(keys, from_client == Py_True ? 0 : 1);
        if (PyBytes_CheckExact(key) && PyBytes_GET_SIZE(key) == entry->size
            && memcmp(PyBytes_AS_STRING(key), entry->raw, entry->size) == 0) {
            Py_INCREF(key);
            Py_SETREF(entry->key, key);
        }
        result = 0;
    }
    else if (from_client != NULL)
        PyErr_SetString(PyExc_TypeError, "Flow.keys is not a pair");
    Py_XDECREF(keys);
    Py_XDECREF(from_client);
    return result;
}

/* The Direction of a flow-table key, borrowed; NULL if absent (or on error, then set). */
static PyObject *lookup(PyObject *table, const unsigned char *key, Py_ssize_t size)
{
    key_entry entry = key_cache_entry(key, size);
    if (entry == NULL)
        return NULL;
    PyObject *direction = PyDict_GetItemWithError(table, entry->key);
    if (direction == NULL)
        return NULL;
    if (!slots_tried)
        learn_slots(direction);
    if (direction != entry->direction && adopt_table_key(entry, direction) < 0)
        return NULL;
    return direction;
}

/* direction.collecting as 1/0, -1 on error. */
static int collecting(PyObject *direction)
{
    /* The usual answer (done collecting), read without taking a reference. */
    if (Py_TYPE(direction) == slots.type && *slot_of(direction, slots.collecting) == Py_False)
        return 0;
    PyObject *value = get(direction, name_collecting, slots.collecting);
    if (value == NULL)
        return -1;
    int result = PyObject_IsTrue(value);
    Py_DECREF(value);
    return result;
}

/* The value of an int of at most one 30-bit digit, read from the object (CPython's layout up
 * to 3.11; 3.12 changed it), or -1: another object, or a later Python. */
static inline long long one_digit_value(PyObject *value)
{
#if PY_VERSION_HEX < 0x030C0000
    if (value != NULL && PyLong_CheckExact(value) && (Py_SIZE(value) == 0 || Py_SIZE(value) == 1))
        return Py_SIZE(value) ? (long long)((PyLongObject *)value)->ob_digit[0] : 0;
#else
    (void)value;
#endif
    return -1;
}

/* obj.<name> += delta for an int attribute; 0 or -1. A counter held only by its slot
 * (reference count 1: nothing else can see it) gets the new value written into it, which
 * saves allocating a new int and freeing the old one per counter per bulk packet. */
static int add_to(PyObject *obj, PyObject *name, Py_ssize_t offset, long long delta)
{
    if (Py_TYPE(obj) == slots.type) {
        PyObject **slot = slot_of(obj, offset);
        long long current = one_digit_value(*slot);
        if (current >= 0) {
            long long sum = current + delta;
#if PY_VERSION_HEX < 0x030C0000
            if (Py_REFCNT(*slot) == 1 && current > 0 && sum > 0 && sum < (1LL << PyLong_SHIFT)) {
                ((PyLongObject *)*slot)->ob_digit[0] = (digit)sum;
                return 0;
            }
#endif
            PyObject *value = PyLong_FromLongLong(sum);
            if (value == NULL)
                return -1;
            Py_SETREF(*slot, value);
            return 0;
        }
    }
    PyObject *value = get(obj, name, offset);
    if (value == NULL)
        return -1;
    long long current = PyLong_AsLongLong(value);
    Py_DECREF(value);
    if (current == -1 && PyErr_Occurred())
        return -1;
    return put(obj, name, offset, PyLong_FromLongLong(current + delta));
}

/* What the fast path does with a bulk packet: packets += 1, bytes += payload, last_seen = ts. */
static int count(PyObject *direction, long long payload, double ts)
{
    if (add_to(direction, name_packets, slots.packets, 1) < 0
        || add_to(direction, name_bytes, slots.bytes, payload) < 0)
        return -1;
    if (Py_TYPE(direction) == slots.type) {
        PyObject *last_seen = *slot_of(direction, slots.last_seen);
        if (last_seen != NULL && PyFloat_CheckExact(last_seen) && Py_REFCNT(last_seen) == 1) {
            ((PyFloatObject *)last_seen)->ob_fval = ts;
            return 0;
        }
    }
    return put(direction, name_last_seen, slots.last_seen, PyFloat_FromDouble(ts));
}

/* obj.<name> as 1/0 (its truth), -1 on error. */
static int truth_of(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL)
        return -1;
    int result = PyObject_IsTrue(value);
    Py_DECREF(value);
    return result;
}

/* A SYN+ACK, or a FIN, without data on a known direction: what engine._Engine._tcp does with
 * it, unless the flow ends (the other side's FIN came already): 1 done, 0 for the slow path, -1
 * error. On an ended flow (a tombstone) it is absorbed; otherwise counted, and a SYN+ACK starts
 * the direction's sequence numbers (Direction.start), a FIN sets its fin. Rare enough (two
 * packets per connection) for getattr/setattr. */
static int tcp_control(PyObject *direction, const unsigned char *segment, long long payload,
                       double ts)
{
    int flags = segment[13];
    PyObject *flow = PyObject_GetAttr(direction, name_flow);
    if (flow == NULL)
        return -1;
    int result = truth_of(flow, name_closed);
    if (result != 0) {
        Py_DECREF(flow);
        return result < 0 ? -1 : 1;
    }
    if (flags & 0x02) { /* SYN+ACK */
        PyObject *next_seq = PyObject_GetAttr(direction, name_next_seq);
        result = next_seq == NULL ? -1 : 0;
        if (next_seq == Py_None) {
            /* The SYN takes one sequence number. */
            PyObject *start = PyLong_FromUnsignedLong(read_u32(segment + 4, 0) + 1u);
            result = start == NULL ? -1 : PyObject_SetAttr(direction, name_next_seq, start);
            Py_XDECREF(start);
        }
        Py_XDECREF(next_seq);
    }
    else { /* FIN */
        PyObject *client = PyObject_GetAttr(flow, name_client);
        PyObject *other = NULL;
        if (client == direction)
            other = PyObject_GetAttr(flow, name_server);
        else if (client != NULL) {
            other = client;
            Py_INCREF(other);
        }
        result = other == NULL ? -1 : truth_of(other, name_fin);
        Py_XDECREF(client);
        Py_XDECREF(other);
        if (result == 0)
            result = PyObject_SetAttr(direction, name_fin, Py_True);
        else if (result > 0)
            result = 2; /* both sides sent a FIN: the flow ends, in Python */
    }
    Py_DECREF(flow);
    if (result != 0)
        return result < 0 ? -1 : 0;
    return count(direction, payload, ts) < 0 ? -1 : 1;
}

/* One TCP packet: counted or otherwise done (1), for the slow path (0), error (-1). key: 12 or
 * 36 bytes; segment: the TCP header; payload: the IP payload length; whole: the captured bytes
 * hold the 20-byte TCP header (else packets.decode skips the packet: it must see it). */
static int tcp_packet(PyObject *tcp, const unsigned char *key, Py_ssize_t key_size,
                      const unsigned char *segment, long long payload, int whole, double ts,
                      double next_sweep)
{
    PyObject *direction = lookup(tcp, key, key_size);
    if (direction == NULL)
        return PyErr_Occurred() ? -1 : 0;
    int flags = segment[13], header_bytes = (segment[12] >> 4) * 4;
    if (flags & 7) { /* FIN, SYN or RST */
        int syn_ack = (flags & 0x17) == 0x12, fin = (flags & 0x07) == 0x01;
        /* The slow path runs the idle sweep first when it is due: those packets go there. */
        if ((syn_ack || fin) && payload == header_bytes && header_bytes >= 20 && whole
            && ts < next_sweep)
            return tcp_control(direction, segment, payload, ts);
        return 0;
    }
    if (payload != header_bytes) { /* not a pure ACK: only a direction done collecting */
        int still = collecting(direction);
        if (still != 0)
            return still < 0 ? -1 : 0;
    }
    return count(direction, payload, ts) < 0 ? -1 : 1;
}

/* One UDP datagram: counted (1), for the slow path (0), error (-1). */
static int udp_packet(PyObject *udp, const unsigned char *key, Py_ssize_t key_size,
                      long long payload, double ts)
{
    PyObject *direction = lookup(udp, key, key_size);
    if (direction == NULL)
        return PyErr_Occurred() ? -1 : 0;
    int still = collecting(direction);
    if (still != 0)
        return still < 0 ? -1 : 0;
    return count(direction, payload, ts) < 0 ? -1 : 1;
}

/* The fast path for one Ethernet frame of caplen >= 54 bytes: 1 counted, 0 slow, -1 error. */
static int ethernet_frame(const unsigned char *f, Py_ssize_t caplen, double ts, PyObject *tcp,
                          PyObject *udp, double next_sweep)
{
    Py_ssize_t ip = 0;
    if (f[12] == 0x08 && f[13] == 0x00 && f[14] == 0x45)
        ip = 14;
    else if (f[12] == 0x81 && f[13] == 0x00 && f[16] == 0x08 && f[17] == 0x00 && f[18] == 0x45)
        ip = 18; /* one 802.1Q tag */
    if (ip) {
        const unsigned char *h = f + ip;
        if ((h[6] & 0x3F) || h[7])
            return 0; /* a fragment */
        long long payload = (long long)((h[2] << 8) | h[3]) - 20;
        if (h[9] == 6)
            return tcp_packet(tcp, h + 12, 12, h + 20, payload, caplen >= ip + 40, ts,
                              next_sweep);
        if (h[9] == 17)
            return udp_packet(udp, h + 12, 12, payload, ts);
        return 0;
    }
    if (f[12] == 0x86 && f[13] == 0xDD && caplen >= 74) {
        const unsigned char *h = f + 14;
        long long payload = (long long)((h[4] << 8) | h[5]);
        if (h[6] == 6)
            return tcp_packet(tcp, h + 8, 36, h + 40, payload, 1, ts, next_sweep);
        if (h[6] == 17)
            return udp_packet(udp, h + 8, 36, payload, ts);
    }
    return 0;
}

/* Packets (auditor.capture.packets.Packet) for the frames walk hands over, made here so that
 * Python does not decode again the headers just read. Packet declares __slots__: its fields are
 * set at the offsets learned when the module is imported. */
enum {
    P_TRANSPORT, P_SRC, P_DST, P_SPORT, P_DPORT, P_FLAGS, P_SEQ, P_PAYLOAD, P_IP_PAYLOAD_LEN,
    P_TRUNCATED, P_KEY, P_FIELDS
};
static const char *const packet_fields[P_FIELDS] = {
    "transport", "src", "dst", "sport", "dport", "flags", "seq", "payload", "ip_payload_len",
    "truncated", "key",
};
static PyTypeObject *packet_type;
static Py_ssize_t packet_slots[P_FIELDS];

static int learn_packet_type(void)
{
    PyObject *module = PyImport_ImportModule("auditor.capture.packets");
    if (module == NULL)
        return -1;
    PyObject *type = PyObject_GetAttrString(module, "Packet");
    Py_DECREF(module);
    if (type == NULL)
        return -1;
    if (!PyType_Check(type)) {
        Py_DECREF(type);
        PyErr_SetString(PyExc_ImportError, "auditor.capture.packets.Packet is not a class");
        return -1;
    }
    packet_type = (PyTypeObject *)type; /* kept for the life of the module */
    for (int field = 0; field < P_FIELDS; field++) {
        PyObject *name = PyUnicode_InternFromString(packet_fields[field]);
        if (name == NULL)
            return -1;
        packet_slots[field] = slot_offset(packet_type, name);
        Py_DECREF(name);
        if (packet_slots[field] < 0) {
            PyErr_Format(PyExc_ImportError, "Packet.%s is not a __slots__ field",
                         packet_fields[field]);
            return -1;
        }
    }
    return 0;
}

/* A Packet with the given fields (new references, stolen; NULL ones mean an error). */
static PyObject *new_packet(PyObject *fields[P_FIELDS])
{
    PyObject *packet = NULL;
    int complete = 1;
    for (int field = 0; field < P_FIELDS; field++)
        complete &= fields[field] != NULL;
    if (complete)
        packet = packet_type->tp_alloc(packet_type, 0);
    for (int field = 0; field < P_FIELDS; field++) {
        if (packet != NULL)
            *slot_of(packet, packet_slots[field]) = fields[field];
        else
            Py_XDECREF(fields[field]);
    }
    return packet;
}

static inline unsigned u16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

/* What packets.decode gives for an Ethernet frame, for the common shapes: optionally one
 * 802.1Q tag, IPv4 with a 20-byte header (not a later fragment) or IPv6 without extension
 * headers, then TCP or UDP (not a VXLAN or Geneve tunnel). New reference: the Packet, or None
 * for any other frame (Python decodes it, counting what it skips); NULL on error. The rules
 * are those of packets._ipv4, _ipv6 and _transport, line for line. */
static PyObject *decode_ethernet(const unsigned char *f, Py_ssize_t caplen)
{
    if (caplen < 14)
        Py_RETURN_NONE;
    Py_ssize_t ip = 14;
    unsigned ethertype = u16(f + 12);
    if (ethertype == 0x8100 && caplen >= 18) {
        ethertype = u16(f + 16);
        ip = 18;
    }
    Py_ssize_t start, end, ip_payload_len, address_size;
    int protocol;
    if (ethertype == 0x0800) {
        const unsigned char *h = f + ip;
        if (caplen < ip + 20 || h[0] != 0x45 || (u16(h + 6) & 0x1FFF))
            Py_RETURN_NONE; /* options, a later fragment, or too short */
        Py_ssize_t total_length = u16(h + 2);
        if (total_length < 20)
            Py_RETURN_NONE;
        start = ip + 20;
        end = ip + total_length;
        ip_payload_len = total_length - 20;
        protocol = h[9];
        address_size = 4;
    }
    else if (ethertype == 0x86DD) {
        const unsigned char *h = f + ip;
        if (caplen < ip + 40 || h[0] >> 4 != 6)
            Py_RETURN_NONE;
        Py_ssize_t payload_length = u16(h + 4);
        start = ip + 40;
        end = payload_length ? start + payload_length : caplen;
        ip_payload_len = payload_length ? payload_length : caplen - start;
        protocol = h[6];
        address_size = 16;
    }
    else
        Py_RETURN_NONE;
    int truncated = end > caplen; /* the snap length cut the packet short */
    if (truncated)
        end = caplen;
    /* The addresses, then the transport header: src, dst, sport, dport are contiguous. */
    const unsigned char *addresses = f + start - 2 * address_size;
    const unsigned char *t = f + start;
    PyObject *fields[P_FIELDS];
    if (protocol == 6) {
        if (end < start + 20 || (t[12] >> 4) < 5)
            Py_RETURN_NONE;
        Py_ssize_t data = start + (t[12] >> 4) * 4;
        fields[P_FLAGS] = PyLong_FromLong(t[13]);
        fields[P_SEQ] = PyLong_FromUnsignedLong(read_u32(t + 4, 0));
        fields[P_PAYLOAD] = PyBytes_FromStringAndSize((const char *)f + data,
                                                      data < end ? end - data : 0);
    }
    else if (protocol == 17) {
        unsigned dport = u16(t + 2), udp_length = u16(t + 4);
        if (end < start + 8 || dport == 4789 || dport == 6081)
            Py_RETURN_NONE;
        if (udp_length >= 8 && start + (Py_ssize_t)udp_length < end)
            end = start + udp_length;
        fields[P_FLAGS] = PyLong_FromLong(0);
        fields[P_SEQ] = PyLong_FromLong(0);
        fields[P_PAYLOAD] = PyBytes_FromStringAndSize((const char *)t + 8, end - start - 8);
    }
    else
        Py_RETURN_NONE;
    fields[P_TRANSPORT] = PyLong_FromLong(protocol);
    fields[P_SRC] = PyBytes_FromStringAndSize((const char *)addresses, address_size);
    fields[P_DST] = PyBytes_FromStringAndSize((const char *)addresses + address_size,
                                              address_size);
    fields[P_SPORT] = PyLong_FromLong(u16(t));
    fields[P_DPORT] = PyLong_FromLong(u16(t + 2));
    fields[P_IP_PAYLOAD_LEN] = PyLong_FromSsize_t(ip_payload_len);
    fields[P_TRUNCATED] = PyBool_FromLong(truncated);
    fields[P_KEY] = key_object(addresses, 2 * address_size + 4);
    return new_packet(fields);
}

/* A tuple of the given items (new references, stolen; a NULL one means an error). */
static PyObject *tuple_of(PyObject *items[], Py_ssize_t size)
{
    PyObject *tuple = PyTuple_New(size);
    for (Py_ssize_t i = 0; i < size; i++) {
        if (items[i] == NULL)
            Py_CLEAR(tuple);
        if (tuple != NULL)
            PyTuple_SET_ITEM(tuple, i, items[i]);
        else
            Py_XDECREF(items[i]);
    }
    return tuple;
}

/* Called once per slow packet (tens of thousands of times per million packets): the arguments
 * are taken as a vector and converted here, not through a format string. */
static PyObject *walk(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 9) {
        PyErr_Format(PyExc_TypeError, "walk() takes 9 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *tcp = args[5], *udp = args[6];
    if (!PyBytes_Check(args[0]) || !PyDict_Check(tcp) || !PyDict_Check(udp)) {
        PyErr_SetString(PyExc_TypeError, "walk() takes a bytes buffer and dict flow tables");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    int little_endian = PyObject_IsTrue(args[2]), ethernet = PyObject_IsTrue(args[3]);
    double frac_scale = PyFloat_AsDouble(args[4]), newest = PyFloat_AsDouble(args[7]),
           next_sweep = PyFloat_AsDouble(args[8]);
    if (PyErr_Occurred())
        return NULL;
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t slow = -1;
    double slow_ts = 0.0;
    long long packets = 0, captured = 0;
    int went_back = 0;
    if (pos < 0)
        pos = size;
    while (pos <= size - 16) {
        const unsigned char *header = buf + pos;
        uint32_t caplen = read_u32(header + 8, little_endian);
        /* caplen < 2^32 and pos < size: no overflow in a 64-bit Py_ssize_t */
        Py_ssize_t end = pos + 16 + (Py_ssize_t)caplen;
        if (end > size)
            break;
        double ts = (double)read_u32(header, little_endian)
                    + (double)read_u32(header + 4, little_endian) * frac_scale;
        if (ts < newest)
            went_back = 1;
        else
            newest = ts;
        Py_ssize_t record = pos;
        pos = end;
        packets += 1;
        captured += caplen;
        int taken = 0;
        if (ethernet && caplen >= 54)
            taken = ethernet_frame(header + 16, (Py_ssize_t)caplen, ts, tcp, udp, next_sweep);
        if (taken < 0)
            return NULL;
        if (!taken) {
            slow = record;
            slow_ts = ts;
            break;
        }
    }
    PyObject *packet = slow >= 0 && ethernet ? decode_ethernet(buf + slow + 16, pos - slow - 16)
                                             : Py_NewRef(Py_None);
    PyObject *result[8] = {
        PyLong_FromSsize_t(pos), PyLong_FromSsize_t(slow), PyFloat_FromDouble(slow_ts),
        PyLong_FromLongLong(packets), PyLong_FromLongLong(captured), PyFloat_FromDouble(newest),
        PyBool_FromLong(went_back), packet,
    };
    return tuple_of(result, 8);
}

static PyObject *decode(PyObject *self, PyObject *frame)
{
    (void)self;
    if (!PyBytes_Check(frame)) {
        PyErr_SetString(PyExc_TypeError, "decode() takes bytes");
        return NULL;
    }
    return decode_ethernet((const unsigned char *)PyBytes_AS_STRING(frame),
                           PyBytes_GET_SIZE(frame));
}

static PyMethodDef methods[] = {
    {"walk", (PyCFunction)(void (*)(void))walk, METH_FASTCALL,
     "walk(buf, pos, little_endian, ethernet, frac_scale, tcp, udp, newest, next_sweep)"
     " -> (pos, slow, ts, packets, captured, newest, went_back, packet): count bulk packets up"
     " to the next one the per-packet path must see"},
    {"decode", decode, METH_O,
     "decode(ethernet_frame) -> Packet | None: what walk hands over with a slow packet"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpath", "the capture engine's pcap fast path", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    name_packets = PyUnicode_InternFromString("packets");
    name_bytes = PyUnicode_InternFromString("bytes");
    name_last_seen = PyUnicode_InternFromString("last_seen");
    name_collecting = PyUnicode_InternFromString("collecting");
    name_flow = PyUnicode_InternFromString("flow");
    name_closed = PyUnicode_InternFromString("closed");
    name_client = PyUnicode_InternFromString("client");
    name_server = PyUnicode_InternFromString("server");
    name_fin = PyUnicode_InternFromString("fin");
    name_next_seq = PyUnicode_InternFromString("next_seq");
    name_keys = PyUnicode_InternFromString("keys");
    name_from_client = PyUnicode_InternFromString("from_client");
    if (!name_packets || !name_bytes || !name_last_seen || !name_collecting || !name_flow
        || !name_closed || !name_client || !name_server || !name_fin || !name_next_seq
        || !name_keys || !name_from_client)
        return NULL;
    if (learn_packet_type() < 0)
        return NULL;
    return PyModule_Create(&module);
}
