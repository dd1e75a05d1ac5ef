/* tidekv.versioning._idhash: the version id of the store's write path in C.
 *
 * id_bytes(kb, parents, value, wall, logical, tail) -> the 20 raw bytes of the id,
 * identical to tidekv.versioning.version._py_id_bytes (the pure Python definition,
 * property-tested against each other and against compute_version_id): SHA-256 of the
 * value, its hex digits placed in the canonical bytes, SHA-256 of those, first 20
 * bytes. Its own SHA-256, with the x86 SHA extensions when the CPU has them and plain
 * C otherwise (sha256() lets tests run either), so it needs no library headers: the
 * point is the call overhead (hashlib builds and copies an OpenSSL context per call,
 * ~0.45 us per digest of a short input; this is ~0.1 us for both).
 * Pure: no I/O, no state beyond constants.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_idcore.h"

static PyObject *id_bytes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "id_bytes takes 6 arguments");
        return NULL;
    }
    PyObject *kb = args[0], *parents = args[1], *value = args[2], *tail = args[5];
    if (!PyBytes_Check(kb) || !PyTuple_Check(parents) || !PyBytes_Check(tail) ||
        (value != Py_None && !PyBytes_Check(value))) {
        PyErr_SetString(PyExc_TypeError, "id_bytes(bytes, tuple, bytes | None, int, int, bytes)");
        return NULL;
    }
    unsigned long long wall = PyLong_AsUnsignedLongLong(args[3]);
    if (wall == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    unsigned long logical = PyLong_AsUnsignedLong(args[4]);
    if (logical == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    uint8_t out[20];
    if (tide_version_id(PyBytes_AS_STRING(kb), PyBytes_GET_SIZE(kb), parents,
                        value == Py_None ? NULL : PyBytes_AS_STRING(value),
                        value == Py_None ? 0 : PyBytes_GET_SIZE(value), wall, logical,
                        PyBytes_AS_STRING(tail), PyBytes_GET_SIZE(tail), out) < 0)
        return NULL;
    return PyBytes_FromStringAndSize((const char *)out, 20);
}

static PyObject *py_sha256(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data;
    int portable = 0;
    if (!PyArg_ParseTuple(args, "y*|p", &data, &portable)) return NULL;
    uint8_t out[32];
    sha256(portable ? blocks_c : fast_blocks, data.buf, (size_t)data.len, out);
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

static PyMethodDef methods[] = {
    {"id_bytes", (PyCFunction)(void (*)(void))id_bytes, METH_FASTCALL,
     "id_bytes(kb, parents, value, wall, logical, tail) -> the 20 raw bytes of the id"},
    {"sha256", py_sha256, METH_VARARGS,
     "sha256(data, portable=False) -> digest (the one id_bytes uses; for tests)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_idhash", NULL, -1, methods,
                                     NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__idhash(void) {
    tide_sha256_init();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "SHA_NI", fast_blocks != blocks_c) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
