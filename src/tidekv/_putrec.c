/* tidekv._putrec: the records of the embedded store's put of a new key, in C.
 *
 * new_key_records(kb, value, wall, logical, tail, revision, ct, origin, author,
 *                 clock_wall, clock_logical) -> (version id, K record, C key, C value)
 *
 * Exactly the bytes StateMachine.put_value builds in Python for a new key of a
 * format-4 store (statemachine.py; tests/store compare both and _plan's): the version
 * id (versioning/_idcore.h, as tidekv.versioning.trusted_id_bytes), the key record as
 * msgpack (an 11-array: no stored heads, the id, revision, content type code or text,
 * false, the value, wall, logical, no parents, origin, author; msgspec's encoding:
 * the shortest int, str and bin forms), the change key C + revision (8 bytes BE) and
 * the change value (format 2, the 20-byte id, not deleted, the store's clock, the key).
 * One call instead of about ten Python-level steps. Pure: no I/O.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "versioning/_idcore.h"

static uint8_t *mp_uint(uint8_t *q, unsigned long long v) {
    if (v < 128) {
        *q++ = (uint8_t)v;
    } else if (v < 256) {
        *q++ = 0xcc;
        *q++ = (uint8_t)v;
    } else if (v < 65536) {
        *q++ = 0xcd;
        *q++ = (uint8_t)(v >> 8);
        *q++ = (uint8_t)v;
    } else if (v < 4294967296ULL) {
        *q++ = 0xce;
        q = put_u32(q, (uint32_t)v);
    } else {
        *q++ = 0xcf;
        q = put_u32(q, (uint32_t)(v >> 32));
        q = put_u32(q, (uint32_t)v);
    }
    return q;
}

static uint8_t *mp_str(uint8_t *q, const char *s, Py_ssize_t n) {
    if (n < 32) {
        *q++ = (uint8_t)(0xa0 | n);
    } else if (n < 256) {
        *q++ = 0xd9;
        *q++ = (uint8_t)n;
    } else if (n < 65536) {
        *q++ = 0xda;
        *q++ = (uint8_t)(n >> 8);
        *q++ = (uint8_t)n;
    } else {
        *q++ = 0xdb;
        q = put_u32(q, (uint32_t)n);
    }
    memcpy(q, s, (size_t)n);
    return q + n;
}

static uint8_t *mp_bin(uint8_t *q, const char *s, Py_ssize_t n) {
    if (n < 256) {
        *q++ = 0xc4;
        *q++ = (uint8_t)n;
    } else if (n < 65536) {
        *q++ = 0xc5;
        *q++ = (uint8_t)(n >> 8);
        *q++ = (uint8_t)n;
    } else {
        *q++ = 0xc6;
        q = put_u32(q, (uint32_t)n);
    }
    memcpy(q, s, (size_t)n);
    return q + n;
}

static int as_u64(PyObject *o, unsigned long long *out) {
    *out = PyLong_AsUnsignedLongLong(o);
    return (*out == (unsigned long long)-1 && PyErr_Occurred()) ? -1 : 0;
}

static PyObject *new_key_records(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "new_key_records takes 11 arguments");
        return NULL;
    }
    PyObject *kb = args[0], *value = args[1], *tail = args[4], *ct = args[6];
    PyObject *origin = args[7], *author = args[8];
    if (!PyBytes_Check(kb) || !PyBytes_Check(value) || !PyBytes_Check(tail) ||
        !(PyLong_Check(ct) || PyUnicode_Check(ct)) || !PyUnicode_Check(origin) ||
        !PyUnicode_Check(author)) {
        PyErr_SetString(PyExc_TypeError,
                        "new_key_records(bytes, bytes, int, int, bytes, int, int | str, str, "
                        "str, int, int)");
        return NULL;
    }
    unsigned long long wall, logical, revision, cwall, clogical, ctcode = 0;
    if (as_u64(args[2], &wall) < 0 || as_u64(args[3], &logical) < 0 ||
        as_u64(args[5], &revision) < 0 || as_u64(args[9], &cwall) < 0 ||
        as_u64(args[10], &clogical) < 0 || (PyLong_Check(ct) && as_u64(ct, &ctcode) < 0))
        return NULL;
    if (clogical > 0xFFFF) {
        PyErr_SetString(PyExc_OverflowError, "logical counter out of range");
        return NULL;
    }
    Py_ssize_t no, na, nct = 0;
    const char *o = PyUnicode_AsUTF8AndSize(origin, &no);
    const char *a = o == NULL ? NULL : PyUnicode_AsUTF8AndSize(author, &na);
    const char *cts = NULL;
    if (a != NULL && PyUnicode_Check(ct)) cts = PyUnicode_AsUTF8AndSize(ct, &nct);
    if (a == NULL || (PyUnicode_Check(ct) && cts == NULL)) return NULL;
    Py_ssize_t nk = PyBytes_GET_SIZE(kb), nv = PyBytes_GET_SIZE(value);

    uint8_t id[20];
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL) return NULL;
    int bad = tide_version_id(PyBytes_AS_STRING(kb), nk, empty, PyBytes_AS_STRING(value), nv,
                              wall, (unsigned long)logical, PyBytes_AS_STRING(tail),
                              PyBytes_GET_SIZE(tail), id);
    Py_DECREF(empty);
    if (bad) return NULL;
    char hex[40];
    for (int i = 0; i < 20; i++) {
        hex[2 * i] = HEXD[id[i] >> 4];
        hex[2 * i + 1] = HEXD[id[i] & 15];
    }

    /* the key record: at most 1 + 1 + 42 + 9 + (5 + nct | 9) + 1 + (5 + nv) + 9 + 9 + 1
     * + (5 + no) + (5 + na) bytes */
    size_t cap = 120 + (size_t)nct + (size_t)nv + (size_t)no + (size_t)na;
    PyObject *krec = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
    if (krec == NULL) return NULL;
    uint8_t *start = (uint8_t *)PyBytes_AS_STRING(krec), *q = start;
    *q++ = 0x9b; /* an 11-array */
    *q++ = 0x90; /* no stored heads */
    q = mp_str(q, hex, 40);
    q = mp_uint(q, revision);
    q = cts != NULL ? mp_str(q, cts, nct) : mp_uint(q, ctcode);
    *q++ = 0xc2; /* not deleted */
    q = mp_bin(q, PyBytes_AS_STRING(value), nv);
    q = mp_uint(q, wall);
    q = mp_uint(q, logical);
    *q++ = 0x90; /* no parents */
    q = mp_str(q, o, no);
    q = mp_str(q, a, na);
    if (_PyBytes_Resize(&krec, (Py_ssize_t)(q - start)) < 0) return NULL;

    uint8_t ck[9];
    ck[0] = 'C';
    put_u32(put_u32(ck + 1, (uint32_t)(revision >> 32)), (uint32_t)revision);
    PyObject *ckey = PyBytes_FromStringAndSize((const char *)ck, 9);
    PyObject *cval = PyBytes_FromStringAndSize(NULL, 32 + nk);
    PyObject *vid = PyUnicode_FromStringAndSize(hex, 40);
    if (ckey == NULL || cval == NULL || vid == NULL) {
        Py_XDECREF(ckey);
        Py_XDECREF(cval);
        Py_XDECREF(vid);
        Py_DECREF(krec);
        return NULL;
    }
    q = (uint8_t *)PyBytes_AS_STRING(cval);
    *q++ = 0x02; /* change format 2 */
    memcpy(q, id, 20);
    q += 20;
    *q++ = 0x00; /* not deleted */
    q = put_u32(put_u32(q, (uint32_t)(cwall >> 32)), (uint32_t)cwall);
    *q++ = (uint8_t)(clogical >> 8);
    *q++ = (uint8_t)clogical;
    memcpy(q, PyBytes_AS_STRING(kb), (size_t)nk);
    PyObject *out = PyTuple_New(4);
    if (out == NULL) {
        Py_DECREF(ckey);
        Py_DECREF(cval);
        Py_DECREF(vid);
        Py_DECREF(krec);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, vid);
    PyTuple_SET_ITEM(out, 1, krec);
    PyTuple_SET_ITEM(out, 2, ckey);
    PyTuple_SET_ITEM(out, 3, cval);
    return out;
}

static PyMethodDef methods[] = {
    {"new_key_records", (PyCFunction)(void (*)(void))new_key_records, METH_FASTCALL,
     "new_key_records(kb, value, wall, logical, tail, revision, ct, origin, author, "
     "clock_wall, clock_logical) -> (version id, K record, C key, C value)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_putrec", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__putrec(void) {
    tide_sha256_init();
    return PyModule_Create(&module);
}
