/* The import's per-row work in C: PostgreSQL COPY lines, SQLite parameters and the audit chain's
 * canonical JSON and links; the JSON reader's batches of plain records and the facts that spare it
 * its Python hooks; the mappers' plain-record checks and their timestamp and UUID parsing.
 *
 * The row writers are column programs built once in Python (legacy.migration.pipeline.RowEncoder,
 * security.audit.EntryHasher) and run here for every row, writing UTF-8 straight into one buffer
 * (the bytes COPY sends and SHA-256 hashes). This file only takes the common case of each column
 * kind, and the reader only the records its own loop would hand on untouched; anything else goes
 * to the Python code the pure-Python path runs, so both paths give the same rows
 * (tests/test_import_encoders.py, tests/test_legacy_jsonio.py and tests/test_import_fast_paths.py
 * hold them equal). Built in place by scripts/build-native; without it the pure-Python path runs. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* COPY kinds (agentforge_core.native numbers them the same) */
enum {
    COPY_CALL = 0,  /* slow(x) always */
    COPY_TEXT = 1,  /* str: COPY-escaped; None: \N */
    COPY_UUID = 2,  /* uuid.UUID: 32 hex digits */
    COPY_TIME = 3,  /* aware datetime: isoformat() */
    COPY_BOOL = 4,  /* t / f */
    COPY_INT = 5,   /* int: decimal; None: \N */
    COPY_IPV4 = 6,  /* a non-empty str without ':' as it is */
    COPY_CONST = 7, /* a fixed text (a static default) */
    COPY_JSON = 8,  /* None: \N; plain JSON written here, anything else encode(x); COPY-escaped */
};

/* canonical JSON kinds */
enum {
    CANON_LITERAL = 0,  /* a fixed text: a key, a brace */
    CANON_TIME = 1,     /* null; UTC datetime: "YYYY-MM-DDTHH:MM:SS.ffffffZ" */
    CANON_JSON = 2,     /* null; plain JSON, keys sorted */
    CANON_IPV4 = 3,     /* null; a non-empty str without ':' as a JSON string */
    CANON_BOOL = 4,     /* true / false / null */
    CANON_UUID = 5,     /* null; uuid.UUID: its quoted 36-character text */
    CANON_INT = 6,      /* null; int: decimal */
    CANON_OPTIONAL = 7, /* null; anything else: slow(x) */
    CANON_TEXT = 8,     /* null; "" as null; str as a JSON string */
};

/* Parameter kinds: a SQLite row's parameters (agentforge_core.native numbers them the same) */
enum {
    PARAM_CALL = 0,  /* slow(x) always */
    PARAM_SAME = 1,  /* x as it is */
    PARAM_UUID = 2,  /* uuid.UUID: its 32 hex digits; None as it is */
    PARAM_TIME = 3,  /* datetime in UTC: "YYYY-MM-DD HH:MM:SS[.ffffff]", naive; None as it is */
    PARAM_BOOL = 4,  /* True, False as 1, 0; None as it is */
    PARAM_JSON = 5,  /* None as it is; plain JSON as json.dumps writes it ("[]" and "{}" at once) */
    PARAM_CONST = 6, /* a fixed value (a static default, converted) */
};

/* What a column program makes: the audit chain's canonical JSON, a COPY line, SQLite parameters */
enum { MODE_CANON = 0, MODE_COPY = 1, MODE_PARAM = 2 };

static PyObject *UUID_type; /* uuid.UUID */
static PyObject *s_int, *s_isoformat;

static const char HEX[] = "0123456789abcdef";

/* n bytes as 2n lowercase hex digits at to */
static void
hex_digits(char *to, const unsigned char *bytes, int n)
{
    for (int i = 0; i < n; i++) {
        to[2 * i] = HEX[bytes[i] >> 4];
        to[2 * i + 1] = HEX[bytes[i] & 15];
    }
}

/* ---- an output buffer of UTF-8 ----------------------------------------------------------------- */

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
    char small[2048];
} Out;

static void
out_init(Out *o)
{
    o->buf = o->small;
    o->len = 0;
    o->cap = sizeof o->small;
}

static void
out_free(Out *o)
{
    if (o->buf != o->small)
        PyMem_Free(o->buf);
}

static int
out_reserve(Out *o, Py_ssize_t more)
{
    if (o->len + more <= o->cap)
        return 0;
    Py_ssize_t cap = o->cap;
    while (cap < o->len + more)
        cap *= 2;
    char *buf = o->buf == o->small ? PyMem_Malloc(cap) : PyMem_Realloc(o->buf, cap);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (o->buf == o->small)
        memcpy(buf, o->small, o->len);
    o->buf = buf;
    o->cap = cap;
    return 0;
}

static int
out_write(Out *o, const char *text, Py_ssize_t n)
{
    if (out_reserve(o, n) < 0)
        return -1;
    memcpy(o->buf + o->len, text, n);
    o->len += n;
    return 0;
}

#define OUT_LITERAL(o, text) out_write((o), (text), (Py_ssize_t)(sizeof(text) - 1))

static const char *
utf8(PyObject *s, Py_ssize_t *n)
{
    return PyUnicode_AsUTF8AndSize(s, n); /* an ASCII str's own data: no copy */
}

static int
out_str(Out *o, PyObject *s)
{
    Py_ssize_t n;
    const char *text = utf8(s, &n);
    return text == NULL ? -1 : out_write(o, text, n);
}

/* bytes with COPY's escapes: backslash, tab, newline, carriage return (all ASCII, and no
 * byte of a UTF-8 multi-byte sequence is ASCII, so escaping bytes escapes the characters) */
static int
out_copy_escaped(Out *o, const char *text, Py_ssize_t n)
{
    if (out_reserve(o, 2 * n) < 0)
        return -1;
    char *to = o->buf + o->len;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = text[i];
        switch (c) {
        case '\\': *to++ = '\\'; *to++ = '\\'; break;
        case '\t': *to++ = '\\'; *to++ = 't'; break;
        case '\n': *to++ = '\\'; *to++ = 'n'; break;
        case '\r': *to++ = '\\'; *to++ = 'r'; break;
        default: *to++ = c;
        }
    }
    o->len = to - o->buf;
    return 0;
}

static int
out_copy_str(Out *o, PyObject *s)
{
    Py_ssize_t n;
    const char *text = utf8(s, &n);
    return text == NULL ? -1 : out_copy_escaped(o, text, n);
}

/* How json_value writes: JSON_COPY doubles every backslash for COPY (a JSON text has no tab,
 * newline or return); JSON_ASCII writes as json.dumps does by default (", " and ": " between
 * items, every character outside ' ' - '~' escaped), else (",", ":") and UTF-8 as is. */
#define JSON_COPY 1
#define JSON_ASCII 2

/* a str as json.encoder.encode_basestring_ascii writes it */
static int
out_json_ascii_string(Out *o, PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (out_reserve(o, 12 * n + 2) < 0)
        return -1;
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    char *to = o->buf + o->len;
    *to++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= ' ' && c <= '~' && c != '"' && c != '\\') {
            *to++ = (char)c;
            continue;
        }
        *to++ = '\\';
        switch (c) {
        case '\\': *to++ = '\\'; continue;
        case '"': *to++ = '"'; continue;
        case '\b': *to++ = 'b'; continue;
        case '\f': *to++ = 'f'; continue;
        case '\n': *to++ = 'n'; continue;
        case '\r': *to++ = 'r'; continue;
        case '\t': *to++ = 't'; continue;
        }
        if (c >= 0x10000) { /* a surrogate pair */
            Py_UCS4 v = c - 0x10000, high = 0xd800 | (v >> 10), low = 0xdc00 | (v & 0x3ff);
            *to++ = 'u';
            for (int shift = 12; shift >= 0; shift -= 4)
                *to++ = HEX[(high >> shift) & 15];
            *to++ = '\\';
            c = low;
        }
        *to++ = 'u';
        for (int shift = 12; shift >= 0; shift -= 4)
            *to++ = HEX[(c >> shift) & 15];
    }
    *to++ = '"';
    o->len = to - o->buf;
    return 0;
}

/* a str as a JSON string, as json.encoder.encode_basestring writes it (UTF-8 as is); with
 * copy, every backslash doubled for COPY; with JSON_ASCII as encode_basestring_ascii */
static int
out_json_string(Out *o, PyObject *s, int copy)
{
    if (copy & JSON_ASCII)
        return out_json_ascii_string(o, s);
    Py_ssize_t n;
    const char *text = utf8(s, &n);
    if (text == NULL || out_reserve(o, 6 * 2 * n + 2) < 0)
        return -1;
    char *to = o->buf + o->len;
    int slashes = copy & JSON_COPY ? 2 : 1;
    *to++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        char short_form = 0;
        if (c >= 0x20 && c != '"' && c != '\\') {
            *to++ = (char)c;
            continue;
        }
        switch (c) {
        case '\\': short_form = '\\'; break;
        case '"': short_form = '"'; break;
        case '\b': short_form = 'b'; break;
        case '\f': short_form = 'f'; break;
        case '\n': short_form = 'n'; break;
        case '\r': short_form = 'r'; break;
        case '\t': short_form = 't'; break;
        }
        for (int k = 0; k < slashes; k++)
            *to++ = '\\';
        if (short_form == '\\') {
            for (int k = 0; k < slashes; k++)
                *to++ = '\\';
        }
        else if (short_form) {
            *to++ = short_form;
        }
        else {
            *to++ = 'u';
            *to++ = '0';
            *to++ = '0';
            *to++ = HEX[c >> 4];
            *to++ = HEX[c & 15];
        }
    }
    *to++ = '"';
    o->len = to - o->buf;
    return 0;
}

static int
out_digits(Out *o, long long value, int width)
{
    char buf[24];
    int n = 0, negative = value < 0;
    unsigned long long v = negative ? 0ULL - (unsigned long long)value : (unsigned long long)value;
    do {
        buf[sizeof buf - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v || n < width);
    if (negative)
        buf[sizeof buf - 1 - n++] = '-';
    return out_write(o, buf + sizeof buf - n, n);
}

/* an exact int in decimal (str(x) and json.dumps agree) */
static int
out_int(Out *o, PyObject *x)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(x, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (!overflow)
        return out_digits(o, v, 1);
    PyObject *text = PyObject_Str(x);
    if (text == NULL)
        return -1;
    int result = out_str(o, text);
    Py_DECREF(text);
    return result;
}

static int
uuid_bytes(PyObject *u, unsigned char out[16])
{
    PyObject *number = PyObject_GetAttr(u, s_int);
    if (number == NULL)
        return -1;
    if (!PyLong_CheckExact(number)) {
        Py_DECREF(number);
        PyErr_SetString(PyExc_TypeError, "UUID.int is not an int");
        return -1;
    }
#if PY_VERSION_HEX >= 0x030D0000
    Py_ssize_t size = PyLong_AsNativeBytes(
        number, out, 16,
        Py_ASNATIVEBYTES_BIG_ENDIAN | Py_ASNATIVEBYTES_UNSIGNED_BUFFER | Py_ASNATIVEBYTES_REJECT_NEGATIVE);
    Py_DECREF(number);
    if (size < 0)
        return -1;
    if (size > 16) {
        PyErr_SetString(PyExc_OverflowError, "UUID.int out of range");
        return -1;
    }
    return 0;
#else
    int result = _PyLong_AsByteArray((PyLongObject *)number, out, 16, 0, 0);
    Py_DECREF(number);
    return result;
#endif
}

/* a uuid.UUID as u.hex, or with dashes and quotes as json.dumps(str(u)) */
static int
out_uuid(Out *o, PyObject *u, int canonical)
{
    unsigned char bytes[16];
    if (uuid_bytes(u, bytes) < 0 || out_reserve(o, 40) < 0)
        return -1;
    char *to = o->buf + o->len;
    if (canonical)
        *to++ = '"';
    for (int i = 0; i < 16; i++) {
        if (canonical && (i == 4 || i == 6 || i == 8 || i == 10))
            *to++ = '-';
        *to++ = HEX[bytes[i] >> 4];
        *to++ = HEX[bytes[i] & 15];
    }
    if (canonical)
        *to++ = '"';
    o->len = to - o->buf;
    return 0;
}

/* YYYY-MM-DDTHH:MM:SS of a datetime */
static int
out_clock(Out *o, PyObject *x)
{
    if (out_digits(o, PyDateTime_GET_YEAR(x), 4) < 0 || OUT_LITERAL(o, "-") < 0 ||
        out_digits(o, PyDateTime_GET_MONTH(x), 2) < 0 || OUT_LITERAL(o, "-") < 0 ||
        out_digits(o, PyDateTime_GET_DAY(x), 2) < 0 || OUT_LITERAL(o, "T") < 0 ||
        out_digits(o, PyDateTime_DATE_GET_HOUR(x), 2) < 0 || OUT_LITERAL(o, ":") < 0 ||
        out_digits(o, PyDateTime_DATE_GET_MINUTE(x), 2) < 0 || OUT_LITERAL(o, ":") < 0 ||
        out_digits(o, PyDateTime_DATE_GET_SECOND(x), 2) < 0)
        return -1;
    return 0;
}

static int
has_colon(PyObject *s)
{
    return PyUnicode_FindChar(s, ':', 0, PyUnicode_GET_LENGTH(s), 1) != -1;
}

/* ---- plain JSON --------------------------------------------------------------------------------- */

/* What json_write leaves to Python: a value security.audit._plain_json refuses (not only JSON's
 * own types, exactly, with string keys), or a plain one this does not write (a float that is not
 * finite). */
#define JSON_NOT_PLAIN 1
#define JSON_ENCODER 2

/* Plain JSON as json.dumps writes it with separators (",", ":") and ensure_ascii=False, keys
 * sorted when asked. 0 when written, JSON_NOT_PLAIN / JSON_ENCODER when not (o is then left
 * partly written: the caller rewinds), -1 on an error. A value that is not plain anywhere in
 * it is JSON_NOT_PLAIN even after a float that is not finite. */
static int
json_value(Out *o, PyObject *x, int sort_keys, int copy, int *nonfinite)
{
    if (PyUnicode_CheckExact(x))
        return out_json_string(o, x, copy);
    if (x == Py_None)
        return OUT_LITERAL(o, "null");
    if (x == Py_True)
        return OUT_LITERAL(o, "true");
    if (x == Py_False)
        return OUT_LITERAL(o, "false");
    if (PyLong_CheckExact(x))
        return out_int(o, x);
    if (PyFloat_CheckExact(x)) {
        if (!isfinite(PyFloat_AS_DOUBLE(x))) {
            *nonfinite = 1; /* still plain: the rest decides between the encoder and slow */
            return 0;
        }
        PyObject *text = PyObject_Repr(x);
        if (text == NULL)
            return -1;
        int result = out_str(o, text);
        Py_DECREF(text);
        return result;
    }
    int list = PyList_CheckExact(x);
    if (!list && !PyDict_CheckExact(x))
        return JSON_NOT_PLAIN;
    if (Py_EnterRecursiveCall(" while writing JSON"))
        return -1;
    int result = 0;
    if (list) {
        result = OUT_LITERAL(o, "[");
        for (Py_ssize_t i = 0; result == 0 && i < PyList_GET_SIZE(x); i++) {
            if (i && (result = copy & JSON_ASCII ? OUT_LITERAL(o, ", ") : OUT_LITERAL(o, ",")) != 0)
                break;
            PyObject *item = Py_NewRef(PyList_GET_ITEM(x, i));
            result = json_value(o, item, sort_keys, copy, nonfinite);
            Py_DECREF(item);
        }
        if (result == 0)
            result = OUT_LITERAL(o, "]");
        Py_LeaveRecursiveCall();
        return result;
    }
    PyObject *keys = PyDict_Keys(x);
    if (keys == NULL) {
        Py_LeaveRecursiveCall();
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(keys);
    for (Py_ssize_t i = 0; result == 0 && i < n; i++) {
        if (!PyUnicode_CheckExact(PyList_GET_ITEM(keys, i)))
            result = JSON_NOT_PLAIN;
    }
    if (result == 0 && sort_keys && n > 1 && PyList_Sort(keys) < 0)
        result = -1;
    if (result == 0)
        result = OUT_LITERAL(o, "{");
    for (Py_ssize_t i = 0; result == 0 && i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        if (i && (result = copy & JSON_ASCII ? OUT_LITERAL(o, ", ") : OUT_LITERAL(o, ",")) != 0)
            break;
        if ((result = out_json_string(o, key, copy)) != 0 ||
            (result = copy & JSON_ASCII ? OUT_LITERAL(o, ": ") : OUT_LITERAL(o, ":")) != 0)
            break;
        PyObject *member = PyDict_GetItemWithError(x, key);
        if (member == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, key);
            result = -1;
            break;
        }
        Py_INCREF(member);
        result = json_value(o, member, sort_keys, copy, nonfinite);
        Py_DECREF(member);
    }
    if (result == 0)
        result = OUT_LITERAL(o, "}");
    Py_DECREF(keys);
    Py_LeaveRecursiveCall();
    return result;
}

static int
json_write(Out *o, PyObject *x, int sort_keys, int copy)
{
    int nonfinite = 0;
    int result = json_value(o, x, sort_keys, copy, &nonfinite);
    return result == 0 && nonfinite ? JSON_ENCODER : result;
}

/* ---- column programs -------------------------------------------------------------------------- */

typedef struct {
    PyObject *key;   /* the values dict's key, or NULL (a constant or a default factory) */
    int kind;
    PyObject *slow;  /* the column's Python encoder, for what the kind's fast path leaves */
    PyObject *extra; /* a constant's text; a factory (key NULL); a JSON kind's encoder */
} Column;

static void
columns_free(Column *cols, Py_ssize_t n)
{
    if (cols == NULL)
        return;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(cols[i].key);
        Py_XDECREF(cols[i].slow);
        Py_XDECREF(cols[i].extra);
    }
    PyMem_Free(cols);
}

/* [(key or None, kind, slow or None, extra or None), ...] -> Column[] of the mode's kinds */
static Column *
columns_parse(PyObject *spec, Py_ssize_t *count, int mode)
{
    PyObject *seq = PySequence_Fast(spec, "columns must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Column *cols = PyMem_Calloc(n ? n : 1, sizeof(Column));
    if (cols == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *key, *slow, *extra;
        int kind;
        if (!PyArg_ParseTuple(item, "OiOO;a column is (key, kind, slow, extra)", &key, &kind, &slow, &extra))
            goto fail;
        int last = mode == MODE_COPY ? COPY_JSON : mode == MODE_PARAM ? PARAM_CONST : CANON_TEXT;
        if (kind < 0 || kind > last) {
            PyErr_Format(PyExc_ValueError, "column %zd: unknown kind %d", i, kind);
            goto fail;
        }
        if (key != Py_None && !PyUnicode_Check(key)) {
            PyErr_Format(PyExc_TypeError, "column %zd: the key must be a str or None", i);
            goto fail;
        }
        cols[i].key = key == Py_None ? NULL : Py_NewRef(key);
        cols[i].kind = kind;
        cols[i].slow = slow == Py_None ? NULL : Py_NewRef(slow);
        cols[i].extra = extra == Py_None ? NULL : Py_NewRef(extra);
        if (mode == MODE_PARAM) { /* a constant may be None; any other value needs its key or factory */
            if (kind == PARAM_CONST) {
                Py_XSETREF(cols[i].extra, Py_NewRef(extra));
                continue;
            }
            if (cols[i].key == NULL && cols[i].extra == NULL) {
                PyErr_Format(PyExc_ValueError, "column %zd: a value needs its key or factory", i);
                goto fail;
            }
            continue;
        }
        int copy = mode == MODE_COPY;
        int constant = kind == (copy ? COPY_CONST : CANON_LITERAL);
        int json = kind == (copy ? COPY_JSON : CANON_JSON);
        int bad = constant ? cols[i].extra == NULL || !PyUnicode_Check(cols[i].extra)
                           : (cols[i].key == NULL && cols[i].extra == NULL) ||
                                 (json && (cols[i].key == NULL || cols[i].extra == NULL));
        if (bad) {
            PyErr_Format(PyExc_ValueError,
                         "column %zd: a constant needs its text, a value its key or factory, JSON its key and encoder",
                         i);
            goto fail;
        }
    }
    Py_DECREF(seq);
    *count = n;
    return cols;
fail:
    columns_free(cols, n);
    Py_DECREF(seq);
    return NULL;
}

/* The column's value: a new reference (values[key], or the factory's result). */
static PyObject *
column_value(Column *c, PyObject *values)
{
    if (c->key == NULL)
        return PyObject_CallNoArgs(c->extra);
    PyObject *value = PyDict_GetItemWithError(values, c->key);
    if (value == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, c->key);
        return NULL;
    }
    return Py_NewRef(value);
}

/* Write what a Python encoder returns for x (its text is final). */
static int
out_call(Out *o, PyObject *encoder, PyObject *x)
{
    if (encoder == NULL) {
        PyErr_Format(PyExc_TypeError, "no encoder for %.100s", Py_TYPE(x)->tp_name);
        return -1;
    }
    PyObject *text = PyObject_CallOneArg(encoder, x);
    if (text == NULL)
        return -1;
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "an encoder returned %.100s, not str", Py_TYPE(text)->tp_name);
        Py_DECREF(text);
        return -1;
    }
    int result = out_str(o, text);
    Py_DECREF(text);
    return result;
}

static PyObject *
values_of(PyObject *args, PyObject *kwargs, const char *name)
{
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_Format(PyExc_TypeError, "%s() takes no keyword arguments", name);
        return NULL;
    }
    if (PyTuple_GET_SIZE(args) != 1 || !PyDict_Check(PyTuple_GET_ITEM(args, 0))) {
        PyErr_Format(PyExc_TypeError, "%s() takes one dict", name);
        return NULL;
    }
    return PyTuple_GET_ITEM(args, 0);
}

/* A column program: CopyRow and CanonicalParts, each with its one option. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    Column *cols;
    int closed;       /* CopyRow: end the line with "\n" */
    Py_ssize_t exact; /* CopyRow, ParamRow: values of another size are not its rows (None); -1: no check */
    int packed;       /* ParamRow: the parameters packed into bytes (pack_values) when they can be */
    Py_ssize_t split; /* CanonicalParts: cols[:split] make the head, the rest the tail */
} Program;

/* tp_alloc and the columns of spec (copy: COPY kinds, else CANON); NULL with an error set */
static Program *
program_new(PyTypeObject *type, PyObject *spec, int mode, int exact)
{
    Program *self = (Program *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->cols = columns_parse(spec, &self->n, mode);
    if (self->cols == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->exact = -1;
    if (exact) { /* a row is a dict of exactly the columns given by key: so many keys */
        self->exact = 0;
        for (Py_ssize_t i = 0; i < self->n; i++)
            self->exact += self->cols[i].key != NULL;
    }
    return self;
}

/* Whether values can be a row of an exact program: as many keys as its columns given by key. */
static int
program_takes(Program *self, PyObject *values)
{
    return self->exact < 0 || PyDict_GET_SIZE(values) == self->exact;
}

static void
program_dealloc(Program *self)
{
    columns_free(self->cols, self->n);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---- CopyRow: values dict -> one COPY text line, UTF-8 ------------------------------------------ */

static int
copy_field(Out *o, Column *c, PyObject *values)
{
    if (c->kind == COPY_CONST)
        return out_str(o, c->extra);
    PyObject *x = column_value(c, values);
    if (x == NULL)
        return -1;
    int result;
    switch (c->kind) {
    case COPY_TEXT:
        result = PyUnicode_CheckExact(x) ? out_copy_str(o, x)
                 : x == Py_None          ? OUT_LITERAL(o, "\\N")
                                         : out_call(o, c->slow, x);
        break;
    case COPY_UUID:
        result = Py_IS_TYPE(x, (PyTypeObject *)UUID_type) ? out_uuid(o, x, 0) : out_call(o, c->slow, x);
        break;
    case COPY_TIME:
        if (!PyDateTime_CheckExact(x) || PyDateTime_DATE_GET_TZINFO(x) == Py_None) {
            result = out_call(o, c->slow, x);
        }
        else if (PyDateTime_DATE_GET_TZINFO(x) == PyDateTime_TimeZone_UTC) {
            int us = PyDateTime_DATE_GET_MICROSECOND(x);
            result = out_clock(o, x);
            if (result == 0 && us)
                result = OUT_LITERAL(o, ".") < 0 ? -1 : out_digits(o, us, 6);
            if (result == 0)
                result = OUT_LITERAL(o, "+00:00");
        }
        else {
            PyObject *text = PyObject_CallMethodNoArgs(x, s_isoformat);
            result = text == NULL ? -1 : out_str(o, text);
            Py_XDECREF(text);
        }
        break;
    case COPY_BOOL:
        result = x == Py_True ? OUT_LITERAL(o, "t") : x == Py_False ? OUT_LITERAL(o, "f") : out_call(o, c->slow, x);
        break;
    case COPY_INT:
        result = PyLong_CheckExact(x) ? out_int(o, x) : x == Py_None ? OUT_LITERAL(o, "\\N") : out_call(o, c->slow, x);
        break;
    case COPY_IPV4:
        if (PyUnicode_CheckExact(x) && PyUnicode_GET_LENGTH(x) > 0 && !has_colon(x))
            result = out_str(o, x);
        else
            result = out_call(o, c->slow, x);
        break;
    case COPY_JSON: {
        if (x == Py_None) {
            result = OUT_LITERAL(o, "\\N");
            break;
        }
        Py_ssize_t mark = o->len;
        result = json_write(o, x, 0, JSON_COPY);
        if (result > 0) { /* the standard library's text of it, COPY-escaped */
            o->len = mark;
            PyObject *text = PyObject_CallOneArg(c->extra, x);
            if (text != NULL && !PyUnicode_Check(text)) {
                PyErr_SetString(PyExc_TypeError, "a JSON encoder did not return str");
                Py_CLEAR(text);
            }
            result = text == NULL ? -1 : out_copy_str(o, text);
            Py_XDECREF(text);
        }
        break;
    }
    default:
        result = out_call(o, c->slow, x);
    }
    Py_DECREF(x);
    return result;
}

static PyObject *
CopyRow_call(Program *self, PyObject *args, PyObject *kwargs)
{
    PyObject *values = values_of(args, kwargs, "CopyRow");
    if (values == NULL)
        return NULL;
    if (!program_takes(self, values))
        Py_RETURN_NONE;
    Out o;
    out_init(&o);
    PyObject *line = NULL;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        if ((i && OUT_LITERAL(&o, "\t") < 0) || copy_field(&o, &self->cols[i], values) < 0)
            goto out;
    }
    if (self->closed && OUT_LITERAL(&o, "\n") < 0)
        goto out;
    line = PyBytes_FromStringAndSize(o.buf, o.len);
out:
    out_free(&o);
    return line;
}

static PyObject *
CopyRow_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"columns", "closed", "exact", NULL};
    PyObject *spec;
    int closed = 1, exact = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|pp:CopyRow", names, &spec, &closed, &exact))
        return NULL;
    Program *self = program_new(type, spec, MODE_COPY, exact);
    if (self != NULL)
        self->closed = closed;
    return (PyObject *)self;
}

static PyTypeObject CopyRowType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agentforge_core._native.CopyRow",
    .tp_basicsize = sizeof(Program),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "CopyRow(columns, closed=True, exact=False)(values) -> a PostgreSQL COPY text line, UTF-8; "
              "exact: None for values with more or fewer keys than the columns given by key",
    .tp_new = CopyRow_new,
    .tp_dealloc = (destructor)program_dealloc,
    .tp_call = (ternaryfunc)CopyRow_call,
};

/* ---- packed parameters: a SQLite row as one bytes object through the pipe ---------------------- */

/* A row of parameters packed as tagged values: 'N' None, 't'/'f' a bool, 'i' an int64, 'd' a float
 * (8 bytes each, native order: the same machine unpacks), 's' a str and 'b' bytes (a 4-byte length,
 * then UTF-8 or the bytes). One bytes object pickles in a few opcodes where a tuple of 32 values took
 * an opcode and a memo entry each. */
/* tag, then the 8 bytes at v */
static int
out_packed_fixed(Out *o, char tag, const void *v)
{
    if (out_reserve(o, 9) < 0)
        return -1;
    o->buf[o->len++] = tag;
    memcpy(o->buf + o->len, v, 8);
    o->len += 8;
    return 0;
}

/* tag, a 4-byte length, then n bytes of data (n < 2**31) */
static int
out_packed_text(Out *o, char tag, const char *data, Py_ssize_t n)
{
    if (out_reserve(o, 5 + n) < 0)
        return -1;
    o->buf[o->len++] = tag;
    uint32_t len = (uint32_t)n;
    memcpy(o->buf + o->len, &len, 4);
    memcpy(o->buf + o->len + 4, data, n);
    o->len += 4 + n;
    return 0;
}

static int
pack_value(Out *o, PyObject *x)
{
    if (x == Py_None)
        return OUT_LITERAL(o, "N");
    if (x == Py_True)
        return OUT_LITERAL(o, "t");
    if (x == Py_False)
        return OUT_LITERAL(o, "f");
    if (PyLong_CheckExact(x)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(x, &overflow);
        if (overflow || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 1; /* sqlite3 refuses it itself: left as it is */
        }
        return out_packed_fixed(o, 'i', &v);
    }
    if (PyFloat_CheckExact(x)) {
        double v = PyFloat_AS_DOUBLE(x);
        return out_packed_fixed(o, 'd', &v);
    }
    const char *data;
    Py_ssize_t n;
    char tag;
    if (PyUnicode_CheckExact(x)) {
        data = PyUnicode_AsUTF8AndSize(x, &n);
        if (data == NULL) { /* a lone surrogate: sqlite3 refuses it itself */
            PyErr_Clear();
            return 1;
        }
        tag = 's';
    }
    else if (PyBytes_CheckExact(x)) {
        data = PyBytes_AS_STRING(x);
        n = PyBytes_GET_SIZE(x);
        tag = 'b';
    }
    else {
        return 1; /* anything else (a Decimal for its adapter): left as it is */
    }
    if (n > 0x7fffffff)
        return 1;
    return out_packed_text(o, tag, data, n);
}

/* bytes of the packed values, or a new reference to the tuple itself when a value does not pack */
static PyObject *
pack_row(PyObject *row)
{
    Out o;
    out_init(&o);
    PyObject *out = NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(row); i++) {
        int packed = pack_value(&o, PyTuple_GET_ITEM(row, i));
        if (packed < 0)
            goto done;
        if (packed > 0) {
            out = Py_NewRef(row);
            goto done;
        }
    }
    out = PyBytes_FromStringAndSize(o.buf, o.len);
done:
    out_free(&o);
    return out;
}

static PyObject *
unpack_row(const char *p, Py_ssize_t n)
{
    PyObject *values = PyList_New(0);
    if (values == NULL)
        return NULL;
    const char *end = p + n;
    while (p < end) {
        char tag = *p++;
        PyObject *x = NULL;
        if (tag == 'N')
            x = Py_NewRef(Py_None);
        else if (tag == 't')
            x = Py_NewRef(Py_True);
        else if (tag == 'f')
            x = Py_NewRef(Py_False);
        else if ((tag == 'i' || tag == 'd') && end - p >= 8) {
            if (tag == 'i') {
                long long v;
                memcpy(&v, p, 8);
                x = PyLong_FromLongLong(v);
            }
            else {
                double v;
                memcpy(&v, p, 8);
                x = PyFloat_FromDouble(v);
            }
            p += 8;
        }
        else if ((tag == 's' || tag == 'b') && end - p >= 4) {
            uint32_t len;
            memcpy(&len, p, 4);
            p += 4;
            if ((Py_ssize_t)len <= end - p) {
                x = tag == 's' ? PyUnicode_DecodeUTF8(p, len, NULL) : PyBytes_FromStringAndSize(p, len);
                p += len;
            }
        }
        if (x == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "not a packed row");
            Py_DECREF(values);
            return NULL;
        }
        int appended = PyList_Append(values, x);
        Py_DECREF(x);
        if (appended < 0) {
            Py_DECREF(values);
            return NULL;
        }
    }
    PyObject *row = PyList_AsTuple(values);
    Py_DECREF(values);
    return row;
}

/* unpack_rows(rows) -> the rows as tuples: each bytes of packed values unpacked, a tuple as it is */
static PyObject *
unpack_rows(PyObject *module, PyObject *rows)
{
    if (!PyList_Check(rows)) {
        PyErr_SetString(PyExc_TypeError, "unpack_rows() takes a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i), *x;
        if (PyBytes_CheckExact(row))
            x = unpack_row(PyBytes_AS_STRING(row), PyBytes_GET_SIZE(row));
        else if (PyTuple_CheckExact(row))
            x = Py_NewRef(row);
        else {
            PyErr_SetString(PyExc_TypeError, "a row is packed bytes or a tuple");
            x = NULL;
        }
        if (x == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, x);
    }
    return out;
}

/* ---- ParamRow: values dict -> a SQLite row's parameters ----------------------------------------- */

/* The column's parameter: a new reference. */
static PyObject *
param_value(Column *c, PyObject *values)
{
    if (c->kind == PARAM_CONST)
        return Py_NewRef(c->extra);
    PyObject *x = column_value(c, values);
    if (x == NULL || c->kind == PARAM_SAME)
        return x;
    PyObject *out = NULL;
    int handled = x == Py_None && c->kind != PARAM_CALL;
    if (handled)
        return x;
    switch (c->kind) {
    case PARAM_UUID:
        if (Py_IS_TYPE(x, (PyTypeObject *)UUID_type)) {
            unsigned char bytes[16];
            char hex[32];
            if (uuid_bytes(x, bytes) < 0)
                break;
            hex_digits(hex, bytes, 16);
            out = PyUnicode_FromStringAndSize(hex, 32);
            handled = 1;
        }
        break;
    case PARAM_TIME:
        if (PyDateTime_CheckExact(x) && PyDateTime_DATE_GET_TZINFO(x) == PyDateTime_TimeZone_UTC) {
            char text[32];
            int micro = PyDateTime_DATE_GET_MICROSECOND(x);
            int n = snprintf(text, sizeof text, "%04d-%02d-%02d %02d:%02d:%02d", PyDateTime_GET_YEAR(x),
                             PyDateTime_GET_MONTH(x), PyDateTime_GET_DAY(x), PyDateTime_DATE_GET_HOUR(x),
                             PyDateTime_DATE_GET_MINUTE(x), PyDateTime_DATE_GET_SECOND(x));
            if (micro) /* no ".000000": as str() writes it */
                n += snprintf(text + n, sizeof text - n, ".%06d", micro);
            out = PyUnicode_FromStringAndSize(text, n);
            handled = 1;
        }
        break;
    case PARAM_BOOL:
        if (x == Py_True || x == Py_False) {
            out = PyLong_FromLong(x == Py_True);
            handled = 1;
        }
        break;
    case PARAM_JSON:
        if (PyList_CheckExact(x) && PyList_GET_SIZE(x) == 0) {
            out = PyUnicode_FromString("[]");
            handled = 1;
        }
        else if (PyDict_CheckExact(x) && PyDict_GET_SIZE(x) == 0) {
            out = PyUnicode_FromString("{}");
            handled = 1;
        }
        else { /* plain JSON as json.dumps writes it; anything else to the converter */
            Out o;
            out_init(&o);
            int written = json_write(&o, x, 0, JSON_ASCII);
            if (written == 0) {
                out = PyUnicode_DecodeASCII(o.buf, o.len, NULL);
                handled = 1;
            }
            out_free(&o);
            if (written < 0)
                handled = 1; /* the error stands */
        }
        break;
    }
    if (!handled && !PyErr_Occurred()) {
        if (c->slow == NULL)
            PyErr_Format(PyExc_TypeError, "no converter for %.100s", Py_TYPE(x)->tp_name);
        else
            out = PyObject_CallOneArg(c->slow, x);
    }
    Py_DECREF(x);
    return out;
}

static PyObject *
ParamRow_call(Program *self, PyObject *args, PyObject *kwargs)
{
    PyObject *values = values_of(args, kwargs, "ParamRow");
    if (values == NULL)
        return NULL;
    if (!program_takes(self, values))
        Py_RETURN_NONE;
    PyObject *row = PyTuple_New(self->n);
    if (row == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *x = param_value(&self->cols[i], values);
        if (x == NULL) {
            Py_DECREF(row);
            return NULL;
        }
        PyTuple_SET_ITEM(row, i, x);
    }
    if (!self->packed)
        return row;
    PyObject *packed = pack_row(row);
    Py_DECREF(row);
    return packed;
}

static PyObject *
ParamRow_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"columns", "exact", "packed", NULL};
    PyObject *spec;
    int exact = 0, packed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|pp:ParamRow", names, &spec, &exact, &packed))
        return NULL;
    Program *self = program_new(type, spec, MODE_PARAM, exact);
    if (self != NULL)
        self->packed = packed;
    return (PyObject *)self;
}

static PyTypeObject ParamRowType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agentforge_core._native.ParamRow",
    .tp_basicsize = sizeof(Program),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "ParamRow(columns, exact=False, packed=False)(values) -> a SQLite row's parameters (a tuple; "
              "packed: bytes for unpack_rows, or the tuple when a value does not pack); exact: None for values "
              "with more or fewer keys than the columns given by key",
    .tp_new = ParamRow_new,
    .tp_dealloc = (destructor)program_dealloc,
    .tp_call = (ternaryfunc)ParamRow_call,
};

/* ---- CanonicalParts: values dict -> the canonical JSON around prev_hash, UTF-8 ------------------ */

static int
canonical_field(Out *o, Column *c, PyObject *values)
{
    if (c->kind == CANON_LITERAL)
        return out_str(o, c->extra);
    PyObject *x = column_value(c, values);
    if (x == NULL)
        return -1;
    int result;
    if (x == Py_None) {
        Py_DECREF(x);
        return OUT_LITERAL(o, "null");
    }
    switch (c->kind) {
    case CANON_TIME:
        if (PyDateTime_CheckExact(x) && PyDateTime_DATE_GET_TZINFO(x) == PyDateTime_TimeZone_UTC &&
            PyDateTime_GET_YEAR(x) >= 1000) {
            result = OUT_LITERAL(o, "\"");
            if (result == 0)
                result = out_clock(o, x);
            if (result == 0)
                result = OUT_LITERAL(o, ".") < 0 ? -1 : out_digits(o, PyDateTime_DATE_GET_MICROSECOND(x), 6);
            if (result == 0)
                result = OUT_LITERAL(o, "Z\"");
        }
        else {
            result = out_call(o, c->slow, x);
        }
        break;
    case CANON_JSON: {
        Py_ssize_t mark = o->len;
        result = json_write(o, x, 1, 0);
        if (result > 0) {
            o->len = mark;
            result = out_call(o, result == JSON_ENCODER ? c->extra : c->slow, x);
        }
        break;
    }
    case CANON_IPV4:
        if (PyUnicode_CheckExact(x) && PyUnicode_GET_LENGTH(x) > 0 && !has_colon(x))
            result = out_json_string(o, x, 0);
        else
            result = out_call(o, c->slow, x);
        break;
    case CANON_BOOL:
        result = x == Py_True    ? OUT_LITERAL(o, "true")
                 : x == Py_False ? OUT_LITERAL(o, "false")
                                 : out_call(o, c->slow, x);
        break;
    case CANON_UUID:
        result = Py_IS_TYPE(x, (PyTypeObject *)UUID_type) ? out_uuid(o, x, 1) : out_call(o, c->slow, x);
        break;
    case CANON_INT:
        result = PyLong_CheckExact(x) ? out_int(o, x) : out_call(o, c->slow, x);
        break;
    case CANON_TEXT:
        if (PyUnicode_CheckExact(x))
            result = PyUnicode_GET_LENGTH(x) ? out_json_string(o, x, 0) : OUT_LITERAL(o, "null");
        else
            result = out_call(o, c->slow, x);
        break;
    default:
        result = out_call(o, c->slow, x);
    }
    Py_DECREF(x);
    return result;
}

static PyObject *
CanonicalParts_call(Program *self, PyObject *args, PyObject *kwargs)
{
    PyObject *values = values_of(args, kwargs, "CanonicalParts");
    if (values == NULL)
        return NULL;
    Out o;
    out_init(&o);
    PyObject *result = NULL;
    Py_ssize_t split = 0;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        if (i == self->split)
            split = o.len;
        if (canonical_field(&o, &self->cols[i], values) < 0)
            goto out;
    }
    if (self->split == self->n)
        split = o.len;
    result = Py_BuildValue("(y#y#)", o.buf, split, o.buf + split, o.len - split);
out:
    out_free(&o);
    return result;
}

static PyObject *
CanonicalParts_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"columns", "split", NULL};
    PyObject *spec;
    Py_ssize_t split;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "On:CanonicalParts", names, &spec, &split))
        return NULL;
    Program *self = program_new(type, spec, MODE_CANON, 0);
    if (self == NULL)
        return NULL;
    if (split < 0 || split > self->n) {
        PyErr_SetString(PyExc_ValueError, "split out of range");
        Py_DECREF(self);
        return NULL;
    }
    self->split = split;
    return (PyObject *)self;
}

static PyTypeObject CanonicalPartsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agentforge_core._native.CanonicalParts",
    .tp_basicsize = sizeof(Program),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "CanonicalParts(columns, split)(values) -> (head, tail): an audit entry's canonical JSON, UTF-8",
    .tp_new = CanonicalParts_new,
    .tp_dealloc = (destructor)program_dealloc,
    .tp_call = (ternaryfunc)CanonicalParts_call,
};

/* ---- the audit chain's links, for the import's COPY lines (legacy.migration.pipeline) ---------- */

/* A chain hash as it is: None, or printable ASCII that neither JSON nor COPY escapes. */
static int
plain_hash(PyObject *prev)
{
    if (prev == Py_None)
        return 1;
    if (!PyUnicode_CheckExact(prev) || !PyUnicode_IS_ASCII(prev))
        return 0;
    const Py_UCS1 *c = PyUnicode_1BYTE_DATA(prev);
    for (Py_ssize_t i = 0; i < PyUnicode_GET_LENGTH(prev); i++) {
        if (c[i] < 0x20 || c[i] > 0x7e || c[i] == '"' || c[i] == '\\')
            return 0;
    }
    return 1;
}

/* seal_rows(items, start, last, lines, sha256, packed=False) -> the index it stopped at: each item
 * (payload, chain key, head, tail) from ``start`` on, linked to its chain's last hash (``last[key]``,
 * which becomes its own): its row appended to ``lines``, a COPY line "payload\tprev_hash\tentry_hash\n"
 * for a payload of bytes (packed: SQLite's packed parameters, the two hashes packed after them), the
 * parameters payload + (prev_hash, entry_hash) for a tuple. The
 * entry_hash is sha256(head + the JSON string of prev_hash ("" for None) + tail), as
 * security.audit.EntryHasher.seal hashes. It stops at the end, or before an item whose chain is
 * not in ``last`` (the caller locks its head) or whose last hash is not plain ASCII (the caller's
 * Python escapes it). */
static PyObject *
seal_rows(PyObject *module, PyObject *args)
{
    PyObject *items, *last, *lines, *sha256;
    Py_ssize_t start;
    int packed = 0;
    if (!PyArg_ParseTuple(args, "O!nO!O!O|p:seal_rows", &PyList_Type, &items, &start, &PyDict_Type, &last,
                          &PyList_Type, &lines, &sha256, &packed))
        return NULL;
    Py_ssize_t i = start < 0 ? 0 : start;
    for (; i < PyList_GET_SIZE(items); i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 4) {
            PyErr_SetString(PyExc_TypeError, "an item is (payload, key, head, tail)");
            return NULL;
        }
        PyObject *payload = PyTuple_GET_ITEM(item, 0), *key = PyTuple_GET_ITEM(item, 1);
        PyObject *head = PyTuple_GET_ITEM(item, 2), *tail = PyTuple_GET_ITEM(item, 3);
        int params = PyTuple_CheckExact(payload);
        if ((!params && !PyBytes_CheckExact(payload)) || !PyBytes_CheckExact(head) || !PyBytes_CheckExact(tail)) {
            PyErr_SetString(PyExc_TypeError, "the payload is bytes or a tuple, head and tail bytes");
            return NULL;
        }
        PyObject *prev = PyDict_GetItemWithError(last, key);
        if (prev == NULL) {
            if (PyErr_Occurred())
                return NULL;
            break; /* a chain new to this import */
        }
        if (!plain_hash(prev))
            break;
        Py_ssize_t prev_len = prev == Py_None ? 0 : PyUnicode_GET_LENGTH(prev);
        const char *prev_text = prev == Py_None ? "" : (const char *)PyUnicode_1BYTE_DATA(prev);
        Py_ssize_t head_len = PyBytes_GET_SIZE(head), tail_len = PyBytes_GET_SIZE(tail);
        PyObject *canonical = PyBytes_FromStringAndSize(NULL, head_len + prev_len + 2 + tail_len);
        if (canonical == NULL)
            return NULL;
        char *to = PyBytes_AS_STRING(canonical);
        memcpy(to, PyBytes_AS_STRING(head), head_len);
        to += head_len;
        *to++ = '"';
        memcpy(to, prev_text, prev_len);
        to += prev_len;
        *to++ = '"';
        memcpy(to, PyBytes_AS_STRING(tail), tail_len);
        PyObject *hash = PyObject_CallOneArg(sha256, canonical);
        Py_DECREF(canonical);
        PyObject *digest = hash == NULL ? NULL : PyObject_CallMethod(hash, "digest", NULL);
        Py_XDECREF(hash);
        if (digest == NULL)
            return NULL;
        if (!PyBytes_CheckExact(digest) || PyBytes_GET_SIZE(digest) != 32) {
            Py_DECREF(digest);
            PyErr_SetString(PyExc_ValueError, "not a SHA-256 digest");
            return NULL;
        }
        char hex[64];
        hex_digits(hex, (const unsigned char *)PyBytes_AS_STRING(digest), 32);
        Py_DECREF(digest);
        PyObject *entry = PyUnicode_FromStringAndSize(hex, 64), *line = NULL;
        if (entry == NULL)
            return NULL;
        if (params) { /* SQLite: the parameters and the two hashes */
            Py_ssize_t count = PyTuple_GET_SIZE(payload);
            line = PyTuple_New(count + 2);
            if (line != NULL) {
                for (Py_ssize_t k = 0; k < count; k++)
                    PyTuple_SET_ITEM(line, k, Py_NewRef(PyTuple_GET_ITEM(payload, k)));
                PyTuple_SET_ITEM(line, count, Py_NewRef(prev));
                PyTuple_SET_ITEM(line, count + 1, Py_NewRef(entry));
            }
        }
        else { /* bytes: the two hashes packed after SQLite's packed parameters, or a COPY line's fields */
            Out o;
            out_init(&o);
            int failed = out_write(&o, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload)) < 0;
            if (packed)
                failed = failed ||
                         (prev == Py_None ? OUT_LITERAL(&o, "N") : out_packed_text(&o, 's', prev_text, prev_len)) < 0 ||
                         out_packed_text(&o, 's', hex, 64) < 0;
            else /* COPY writes None as \N, the empty hash as an empty field */
                failed = failed || OUT_LITERAL(&o, "\t") < 0 ||
                         (prev == Py_None ? OUT_LITERAL(&o, "\\N") : out_write(&o, prev_text, prev_len)) < 0 ||
                         OUT_LITERAL(&o, "\t") < 0 || out_write(&o, hex, 64) < 0 || OUT_LITERAL(&o, "\n") < 0;
            line = failed ? NULL : PyBytes_FromStringAndSize(o.buf, o.len);
            out_free(&o);
        }
        if (line == NULL) {
            Py_DECREF(entry);
            return NULL;
        }
        int failed = PyDict_SetItem(last, key, entry) < 0 || PyList_Append(lines, line) < 0;
        Py_DECREF(entry);
        Py_DECREF(line);
        if (failed)
            return NULL;
    }
    return PyLong_FromSsize_t(i);
}

/* ---- a record's shape, for the mappers' plain paths (legacy.format.mappers.base.record_shape) --- */

enum {
    SHAPE_ANY = 0,      /* any value */
    SHAPE_TEXT = 1,     /* a str of at most limit characters (0: any length) */
    SHAPE_ID = 2,       /* a non-empty str of at most limit characters */
    SHAPE_OPT_TEXT = 3, /* None, or as SHAPE_TEXT */
    SHAPE_BOOL = 4,     /* True or False */
    SHAPE_LIST = 5,     /* a list */
};

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    PyObject **keys;
    int *kinds;
    Py_ssize_t *limits;
} RecordShape;

static void
RecordShape_dealloc(RecordShape *self)
{
    for (Py_ssize_t i = 0; self->keys != NULL && i < self->n; i++)
        Py_XDECREF(self->keys[i]);
    PyMem_Free(self->keys);
    PyMem_Free(self->kinds);
    PyMem_Free(self->limits);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
RecordShape_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"fields", NULL};
    PyObject *fields;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!:RecordShape", names, &PyTuple_Type, &fields))
        return NULL;
    RecordShape *self = (RecordShape *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(fields);
    self->keys = PyMem_Calloc(n ? n : 1, sizeof(PyObject *));
    self->kinds = PyMem_Calloc(n ? n : 1, sizeof(int));
    self->limits = PyMem_Calloc(n ? n : 1, sizeof(Py_ssize_t));
    if (self->keys == NULL || self->kinds == NULL || self->limits == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->n = n;
    PyObject *seen = PySet_New(NULL);
    if (seen == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key;
        int kind;
        Py_ssize_t limit;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(fields, i), "Uin:field", &key, &kind, &limit))
            goto error;
        if (kind < SHAPE_ANY || kind > SHAPE_LIST || limit < 0) {
            PyErr_Format(PyExc_ValueError, "field %R: no such kind or limit", key);
            goto error;
        }
        int repeated = PySet_Contains(seen, key);
        if (repeated != 0) { /* each key once: the size check then means the same keys */
            if (repeated > 0)
                PyErr_Format(PyExc_ValueError, "field %R twice", key);
            goto error;
        }
        if (PySet_Add(seen, key) < 0)
            goto error;
        self->keys[i] = Py_NewRef(key);
        self->kinds[i] = kind;
        self->limits[i] = limit;
    }
    Py_DECREF(seen);
    return (PyObject *)self;
error:
    Py_DECREF(seen);
    Py_DECREF(self);
    return NULL;
}

/* shape(record) -> its values in the fields' order when record is a dict with exactly these keys,
 * each value of its field's kind; else None */
static PyObject *
RecordShape_call(RecordShape *self, PyObject *args, PyObject *kwargs)
{
    PyObject *record;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "RecordShape() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "RecordShape", 1, 1, &record))
        return NULL;
    if (!PyDict_CheckExact(record) || PyDict_GET_SIZE(record) != self->n)
        Py_RETURN_NONE;
    PyObject *out = PyTuple_New(self->n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *value = PyDict_GetItemWithError(record, self->keys[i]);
        if (value == NULL) {
            Py_DECREF(out);
            if (PyErr_Occurred())
                return NULL;
            Py_RETURN_NONE;
        }
        int kind = self->kinds[i], fits;
        switch (kind) {
        case SHAPE_ANY:
            fits = 1;
            break;
        case SHAPE_BOOL:
            fits = PyBool_Check(value);
            break;
        case SHAPE_LIST:
            fits = PyList_CheckExact(value);
            break;
        default:
            if (value == Py_None) {
                fits = kind == SHAPE_OPT_TEXT;
                break;
            }
            fits = PyUnicode_CheckExact(value) &&
                   (self->limits[i] == 0 || PyUnicode_GET_LENGTH(value) <= self->limits[i]) &&
                   (kind != SHAPE_ID || PyUnicode_GET_LENGTH(value) > 0);
        }
        if (!fits) {
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        PyTuple_SET_ITEM(out, i, Py_NewRef(value));
    }
    return out;
}

static PyTypeObject RecordShapeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agentforge_core._native.RecordShape",
    .tp_basicsize = sizeof(RecordShape),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "RecordShape(((key, kind, limit), ...))(record) -> its values in that order when it has that shape, else None",
    .tp_new = RecordShape_new,
    .tp_dealloc = (destructor)RecordShape_dealloc,
    .tp_call = (ternaryfunc)RecordShape_call,
};

/* ---- facts about a decoded JSON record, for the reader (legacy.format.jsonio) ------------------- */

/* What the reader learns from a record's text, text[start:end] (valid JSON). */
typedef struct {
    Py_ssize_t pairs;    /* ':' outside strings: every one separates a key from its value */
    Py_ssize_t brackets; /* '{' and '[' anywhere, in strings too (as str.count counts them) */
    int long_number;     /* a run of 19 or more of "-0123456789" outside strings */
    int escape;          /* "\u0000" or "\uD8.." - "\uDF.." at any backslash (jsonio._ESCAPES) */
} Facts;

/* "\u0000" or a surrogate's escape starting at a backslash at i */
static int
suspect_escape(int kind, const void *data, Py_ssize_t i, Py_ssize_t end)
{
    if (i + 3 >= end || PyUnicode_READ(kind, data, i + 1) != 'u')
        return 0;
    Py_UCS4 a = PyUnicode_READ(kind, data, i + 2), b = PyUnicode_READ(kind, data, i + 3);
    if (a == 'd' || a == 'D')
        return (b >= '8' && b <= '9') || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F');
    return a == '0' && b == '0' && i + 5 < end && PyUnicode_READ(kind, data, i + 4) == '0' &&
           PyUnicode_READ(kind, data, i + 5) == '0';
}

static void
text_facts(PyObject *text, Py_ssize_t start, Py_ssize_t end, Facts *f)
{
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t run = 0;
    int in_string = 0;
    memset(f, 0, sizeof *f);
    for (Py_ssize_t i = start; i < end; i++) {
        if (in_string && kind == PyUnicode_1BYTE_KIND) {
            /* most of a record is inside strings: skip to the next quote, backslash or bracket */
            const Py_UCS1 *bytes = (const Py_UCS1 *)data;
            while (i < end && bytes[i] != '"' && bytes[i] != '\\') {
                if (bytes[i] == '{' || bytes[i] == '[')
                    f->brackets++;
                i++;
            }
            if (i == end)
                break;
        }
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (ch == '{' || ch == '[')
            f->brackets++;
        if (in_string) {
            if (ch == '\\') {
                /* the regex looks at every backslash, an escaped one too */
                if (suspect_escape(kind, data, i, end) ||
                    (i + 1 < end && PyUnicode_READ(kind, data, i + 1) == '\\' && suspect_escape(kind, data, i + 1, end)))
                    f->escape = 1;
                i++; /* the escaped character */
            }
            else if (ch == '"')
                in_string = 0;
            continue;
        }
        if (ch == '"') {
            in_string = 1;
            run = 0;
        }
        else if (ch == ':') {
            f->pairs++;
            run = 0;
        }
        else if (ch == '-' || (ch >= '0' && ch <= '9')) {
            if (++run >= 19)
                f->long_number = 1;
        }
        else {
            run = 0;
        }
    }
}

/* json_text_facts(text, start, end) -> (pairs, long_number): in text[start:end] (valid JSON), the
 * number of ':' outside strings (every one separates a key from its value) and whether a run of
 * 19 or more of "-0123456789" stands outside strings (an integer the reader must range-check). */
static PyObject *
json_text_facts(PyObject *module, PyObject *args)
{
    PyObject *text;
    Py_ssize_t start, end;
    if (!PyArg_ParseTuple(args, "Unn:json_text_facts", &text, &start, &end))
        return NULL;
    if (start < 0 || end > PyUnicode_GET_LENGTH(text) || start > end) {
        PyErr_SetString(PyExc_IndexError, "span out of range");
        return NULL;
    }
    Facts f;
    text_facts(text, start, end, &f);
    return Py_BuildValue("(nO)", f.pairs, f.long_number ? Py_True : Py_False);
}

static Py_ssize_t
count_members(PyObject *value)
{
    Py_ssize_t total = 0;
    if (PyDict_CheckExact(value)) {
        if (Py_EnterRecursiveCall(" in member_count"))
            return -1;
        Py_ssize_t pos = 0;
        PyObject *key, *member;
        total = PyDict_GET_SIZE(value);
        while (PyDict_Next(value, &pos, &key, &member)) {
            Py_ssize_t inner = count_members(member);
            if (inner < 0) {
                Py_LeaveRecursiveCall();
                return -1;
            }
            total += inner;
        }
        Py_LeaveRecursiveCall();
    }
    else if (PyList_CheckExact(value)) {
        if (Py_EnterRecursiveCall(" in member_count"))
            return -1;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(value); i++) {
            Py_ssize_t inner = count_members(PyList_GET_ITEM(value, i));
            if (inner < 0) {
                Py_LeaveRecursiveCall();
                return -1;
            }
            total += inner;
        }
        Py_LeaveRecursiveCall();
    }
    return total;
}

/* member_count(value) -> the keys of every dict in a decoded JSON value */
static PyObject *
member_count(PyObject *module, PyObject *value)
{
    Py_ssize_t total = count_members(value);
    return total < 0 ? NULL : PyLong_FromSsize_t(total);
}

static Py_ssize_t
skip_space(int kind, const void *data, Py_ssize_t i, Py_ssize_t n)
{
    while (i < n) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r')
            break;
        i++;
    }
    return i;
}

/* The end of the object or list at text[at] (one of '{', '['): the index after its closing
 * bracket, or -1 when the text ends first. Its facts too, as text_facts gives them. */
static Py_ssize_t
value_end(PyObject *text, Py_ssize_t at, Facts *f)
{
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), depth = 0;
    for (Py_ssize_t i = at; i < n; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (ch == '"') { /* a string: to its closing quote */
            for (i++; i < n; i++) {
                if (kind == PyUnicode_1BYTE_KIND) {
                    const Py_UCS1 *bytes = (const Py_UCS1 *)data;
                    while (i < n && bytes[i] != '"' && bytes[i] != '\\')
                        i++;
                    if (i == n)
                        return -1;
                }
                ch = PyUnicode_READ(kind, data, i);
                if (ch == '"')
                    break;
                if (ch == '\\')
                    i++; /* the escaped character */
            }
            if (i >= n)
                return -1;
        }
        else if (ch == '{' || ch == '[')
            depth++;
        else if ((ch == '}' || ch == ']') && --depth == 0) {
            text_facts(text, at, i + 1, f);
            return i + 1;
        }
    }
    return -1;
}

/* scan_objects(scan, loads, text, pos, max_depth, max_text, limit, keyed) -> (records, pos, done):
 * the objects of a list file (keyed: the (key, object) pairs of a dict file) from text[pos:],
 * where a value (keyed: a key) is due, at most ``limit`` of them. Each is decoded by
 * ``loads(its text)`` (orjson's), or without it by ``scan(text, at)`` (the standard library's
 * scan_once). Only a record the reader's own loop (legacy.format.jsonio._Records) would hand on
 * untouched is taken: an object (after a key without escapes), its text complete and followed
 * by ',' or the closing bracket, as many keys decoded as the text separates (no duplicate key),
 * and none of the signs that make the reader check its values (a long number, a suspect escape,
 * more brackets than max_depth, more text than max_text). The first other one stops the batch
 * before it, for the reader to take the slow way: a refill, a check, an error. ``pos`` ends
 * after the last record's ',' (or the closing bracket: ``done``). */
static PyObject *
scan_objects(PyObject *module, PyObject *args)
{
    PyObject *scan, *loads, *text;
    Py_ssize_t pos, max_depth, max_text, limit;
    int keyed;
    if (!PyArg_ParseTuple(args, "OOUnnnnp:scan_objects", &scan, &loads, &text, &pos, &max_depth, &max_text, &limit,
                          &keyed))
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (pos < 0 || pos > n) {
        PyErr_SetString(PyExc_IndexError, "position out of range");
        return NULL;
    }
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_UCS4 closing = keyed ? '}' : ']';
    PyObject *records = PyList_New(0);
    if (records == NULL)
        return NULL;
    int done = 0;
    while (PyList_GET_SIZE(records) < limit) {
        Py_ssize_t at = skip_space(kind, data, pos, n);
        PyObject *key = NULL;
        if (keyed) { /* "key" : */
            if (at >= n || PyUnicode_READ(kind, data, at) != '"')
                break;
            Py_ssize_t close = at + 1;
            Py_UCS4 ch = 0;
            while (close < n && (ch = PyUnicode_READ(kind, data, close)) != '"' && ch != '\\' && ch >= 0x20)
                close++;
            if (close >= n || ch != '"')
                break; /* an escape, a control character or the end: the reader decides */
            Py_ssize_t colon = skip_space(kind, data, close + 1, n);
            if (colon >= n || PyUnicode_READ(kind, data, colon) != ':')
                break;
            if ((key = PyUnicode_Substring(text, at + 1, close)) == NULL)
                goto error;
            at = skip_space(kind, data, colon + 1, n);
        }
        Facts f = {0};
        Py_ssize_t end = at < n && PyUnicode_READ(kind, data, at) == '{' ? value_end(text, at, &f) : -1;
        Py_ssize_t next = end < 0 ? n : skip_space(kind, data, end, n);
        Py_UCS4 ch = next < n ? PyUnicode_READ(kind, data, next) : 0;
        if ((ch != ',' && ch != closing) || f.long_number || f.escape || end - at > max_text ||
            f.brackets > max_depth) {
            Py_XDECREF(key);
            break;
        }
        PyObject *value;
        if (loads != Py_None) {
            PyObject *slice = PyUnicode_Substring(text, at, end);
            value = slice == NULL ? NULL : PyObject_CallOneArg(loads, slice);
            Py_XDECREF(slice);
        }
        else {
            PyObject *result = PyObject_CallFunction(scan, "On", text, at);
            value = NULL;
            if (result != NULL) {
                if (PyTuple_Check(result) && PyTuple_GET_SIZE(result) == 2 &&
                    PyLong_AsSsize_t(PyTuple_GET_ITEM(result, 1)) == end)
                    value = Py_NewRef(PyTuple_GET_ITEM(result, 0));
                else if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError, "the scanner ended elsewhere");
                Py_DECREF(result);
            }
        }
        if (value == NULL) {
            Py_XDECREF(key);
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                goto error; /* KeyboardInterrupt and the like go on up */
            PyErr_Clear();  /* refused: the reader decodes it again and reports */
            break;
        }
        Py_ssize_t members = PyDict_CheckExact(value) ? count_members(value) : -2;
        if (members != f.pairs) {
            Py_XDECREF(key);
            Py_DECREF(value);
            if (members == -1)
                goto error;
            break;
        }
        PyObject *item = value;
        if (keyed) {
            item = PyTuple_Pack(2, key, value);
            Py_DECREF(key);
            Py_DECREF(value);
            if (item == NULL)
                goto error;
        }
        int appended = PyList_Append(records, item);
        Py_DECREF(item);
        if (appended < 0)
            goto error;
        pos = next + 1;
        if (ch == closing) {
            done = 1;
            break;
        }
    }
    return Py_BuildValue("(NnO)", records, pos, done ? Py_True : Py_False);
error:
    Py_DECREF(records);
    return NULL;
}

/* ---- the mappers' two parsers ---------------------------------------------------------------------- */

static int
digits(const char *text, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -1;
        v = v * 10 + (text[i] - '0');
    }
    *out = v;
    return 0;
}

/* utc_timestamp(text) -> an aware UTC datetime for "YYYY-MM-DD[T ]HH:MM:SS[.ffffff][+00:00]"
 * (the form AgentForge writes), else None: legacy.format.jsonio.parse_timestamp takes the rest. */
static PyObject *
utc_timestamp(PyObject *module, PyObject *arg)
{
    if (!PyUnicode_Check(arg) || !PyUnicode_IS_ASCII(arg)) /* the form is ASCII; anything else is Python's */
        Py_RETURN_NONE;
    Py_ssize_t n;
    const char *t = PyUnicode_AsUTF8AndSize(arg, &n);
    if (t == NULL)
        return NULL;
    int year, month, day, hour, minute, second, micro = 0;
    if (n != 19 && n != 26 && n != 25 && n != 32)
        Py_RETURN_NONE;
    Py_ssize_t clock_end = (n == 26 || n == 32) ? 26 : 19;
    if (t[4] != '-' || t[7] != '-' || (t[10] != 'T' && t[10] != ' ') || t[13] != ':' || t[16] != ':' ||
        digits(t, 4, &year) || digits(t + 5, 2, &month) || digits(t + 8, 2, &day) || digits(t + 11, 2, &hour) ||
        digits(t + 14, 2, &minute) || digits(t + 17, 2, &second))
        Py_RETURN_NONE;
    if (clock_end == 26 && (t[19] != '.' || digits(t + 20, 6, &micro)))
        Py_RETURN_NONE;
    if (n > clock_end && memcmp(t + clock_end, "+00:00", 6) != 0)
        Py_RETURN_NONE;
    PyObject *value = PyDateTimeAPI->DateTime_FromDateAndTime(year, month, day, hour, minute, second, micro,
                                                              PyDateTime_TimeZone_UTC, PyDateTimeAPI->DateTimeType);
    if (value == NULL && PyErr_ExceptionMatches(PyExc_ValueError)) { /* day 31 of April: Python says how */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return value;
}

static PyObject *UUID_new_args, *SafeUUID_unknown, *s_is_safe;

static int
hex_value(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* uuid_from_text(text) -> uuid.UUID(text) for 32 hex digits or the 8-4-4-4-12 form, else None
 * (uuid.UUID takes the rest, and says what is wrong). */
static PyObject *
uuid_from_text(PyObject *module, PyObject *arg)
{
    if (!PyUnicode_Check(arg) || !PyUnicode_IS_ASCII(arg))
        Py_RETURN_NONE;
    Py_ssize_t n;
    const char *t = PyUnicode_AsUTF8AndSize(arg, &n);
    if (t == NULL)
        return NULL;
    if (n != 32 && n != 36)
        Py_RETURN_NONE;
    unsigned char bytes[16];
    int at = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (n == 36 && (i == 8 || i == 13 || i == 18 || i == 23)) {
            if (t[i] != '-')
                Py_RETURN_NONE;
            continue;
        }
        int v = hex_value(t[i]);
        if (v < 0)
            Py_RETURN_NONE;
        if (at % 2 == 0)
            bytes[at / 2] = (unsigned char)(v << 4);
        else
            bytes[at / 2] |= (unsigned char)v;
        at++;
    }
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *number = PyLong_FromUnsignedNativeBytes(bytes, 16, Py_ASNATIVEBYTES_BIG_ENDIAN);
#else
    PyObject *number = _PyLong_FromByteArray(bytes, 16, 0, 0);
#endif
    if (number == NULL)
        return NULL;
    PyTypeObject *type = (PyTypeObject *)UUID_type;
    PyObject *u = type->tp_new(type, UUID_new_args, NULL);
    if (u == NULL || PyObject_GenericSetAttr(u, s_int, number) < 0 ||
        PyObject_GenericSetAttr(u, s_is_safe, SafeUUID_unknown) < 0) {
        Py_XDECREF(u);
        Py_DECREF(number);
        return NULL;
    }
    Py_DECREF(number);
    return u;
}

static PyMethodDef native_functions[] = {
    {"json_text_facts", json_text_facts, METH_VARARGS,
     "json_text_facts(text, start, end) -> (':' outside strings, a run of 19+ digits outside strings)"},
    {"scan_objects", scan_objects, METH_VARARGS,
     "scan_objects(scan, loads, text, pos, max_depth, max_text, limit, keyed) -> (the plain records from pos, pos after them, "
     "the closing bracket reached)"},
    {"unpack_rows", unpack_rows, METH_O, "unpack_rows(rows) -> each packed row (ParamRow(packed=True)) as its tuple"},
    {"seal_rows", seal_rows, METH_VARARGS,
     "seal_rows(items, start, last, rows, sha256) -> where it stopped: audit entries' rows, linked to their chains"},
    {"member_count", member_count, METH_O, "member_count(value) -> the keys of every dict in a decoded JSON value"},
    {"utc_timestamp", utc_timestamp, METH_O, "utc_timestamp(text) -> an aware UTC datetime for AgentForge's form, else None"},
    {"uuid_from_text", uuid_from_text, METH_O, "uuid_from_text(text) -> uuid.UUID(text) for the plain forms, else None"},
    {NULL, NULL, 0, NULL},
};

/* ---- the module ---------------------------------------------------------------------------------- */

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "agentforge_core._native",
    .m_doc = "The import's per-row text in C (COPY lines, the audit chain's canonical JSON).",
    .m_size = -1,
    .m_methods = native_functions,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return NULL;
    PyObject *uuid = PyImport_ImportModule("uuid");
    if (uuid == NULL)
        return NULL;
    UUID_type = PyObject_GetAttrString(uuid, "UUID");
    PyObject *safe = PyObject_GetAttrString(uuid, "SafeUUID");
    Py_DECREF(uuid);
    if (UUID_type == NULL || !PyType_Check(UUID_type) || safe == NULL) {
        Py_XDECREF(safe);
        return NULL;
    }
    if (!(s_int = PyUnicode_InternFromString("int")) || !(s_isoformat = PyUnicode_InternFromString("isoformat")) ||
        !(s_is_safe = PyUnicode_InternFromString("is_safe")) || !(UUID_new_args = PyTuple_New(0))) {
        Py_DECREF(safe);
        return NULL;
    }
    SafeUUID_unknown = PyObject_GetAttrString(safe, "unknown");
    Py_DECREF(safe);
    if (SafeUUID_unknown == NULL)
        return NULL;
    if (PyType_Ready(&CopyRowType) < 0 || PyType_Ready(&CanonicalPartsType) < 0 || PyType_Ready(&RecordShapeType) < 0 ||
        PyType_Ready(&ParamRowType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&native_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "CopyRow", (PyObject *)&CopyRowType) < 0 ||
        PyModule_AddObjectRef(module, "CanonicalParts", (PyObject *)&CanonicalPartsType) < 0 ||
        PyModule_AddObjectRef(module, "RecordShape", (PyObject *)&RecordShapeType) < 0 ||
        PyModule_AddObjectRef(module, "ParamRow", (PyObject *)&ParamRowType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
