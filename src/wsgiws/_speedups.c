/*
 * wsgiws._speedups: the optional C accelerator for WebSocket payload masking.
 *
 * apply_mask(data, mask) -> bytes XORs every byte of ``data`` with the 4-byte
 * ``mask``, repeated (RFC 6455 section 5.3). Masking and unmasking are the same
 * operation. ``data`` may be any object with the buffer protocol (bytes,
 * bytearray, memoryview, also non-contiguous slices); ``mask`` any bytes-like
 * object of exactly 4 bytes.
 *
 * The loop XORs 16 bytes at a time with SSE2 (x86-64) or NEON (AArch64), else
 * 8 bytes at a time as a 64-bit word, then the tail byte by byte. Unaligned
 * loads and stores go through memcpy or the unaligned intrinsics, so any
 * offset into a buffer (a memoryview slice) is handled.
 *
 * wsgiws.mask imports this module when it is built and falls back to pure
 * Python when it is not (or when WSGIWS_NO_SPEEDUPS is set).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <emmintrin.h>
#define WSGIWS_SSE2 1
#elif defined(__ARM_NEON) || defined(__aarch64__)
#include <arm_neon.h>
#define WSGIWS_NEON 1
#endif

/* XOR n bytes of src with the mask into dst; dst and src may be the same. */
static void
xor_mask(char *dst, const char *src, Py_ssize_t n, const unsigned char mask[4])
{
    Py_ssize_t i = 0;
    unsigned char mask8[16];
    uint64_t word;

    for (int k = 0; k < 16; k++) {
        mask8[k] = mask[k & 3];
    }

#if defined(WSGIWS_SSE2)
    if (n >= 16) {
        __m128i m = _mm_loadu_si128((const __m128i *)mask8);
        for (; i + 64 <= n; i += 64) {
            __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
            __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
            __m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
            __m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));
            _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, m));
            _mm_storeu_si128((__m128i *)(dst + i + 16), _mm_xor_si128(b, m));
            _mm_storeu_si128((__m128i *)(dst + i + 32), _mm_xor_si128(c, m));
            _mm_storeu_si128((__m128i *)(dst + i + 48), _mm_xor_si128(d, m));
        }
        for (; i + 16 <= n; i += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
            _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, m));
        }
    }
#elif defined(WSGIWS_NEON)
    if (n >= 16) {
        uint8x16_t m = vld1q_u8(mask8);
        for (; i + 16 <= n; i += 16) {
            uint8x16_t a = vld1q_u8((const uint8_t *)(src + i));
            vst1q_u8((uint8_t *)(dst + i), veorq_u8(a, m));
        }
    }
#endif

    /* i is a multiple of 4 here, so the mask is still in phase. */
    memcpy(&word, mask8, 8);
    for (; i + 8 <= n; i += 8) {
        uint64_t chunk;
        memcpy(&chunk, src + i, 8);
        chunk ^= word;
        memcpy(dst + i, &chunk, 8);
    }
    for (; i < n; i++) {
        dst[i] = (char)(src[i] ^ mask[i & 3]);
    }
}

PyDoc_STRVAR(apply_mask_doc,
"apply_mask(data, mask, /)\n"
"--\n"
"\n"
"Return ``data`` XORed with the 4-byte ``mask`` repeated, as bytes.\n"
"\n"
"``data`` is any bytes-like object; ``mask`` a bytes-like object of length 4.");

static PyObject *
apply_mask(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, mask;
    PyObject *result = NULL;
    unsigned char key[4];

    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "apply_mask() takes exactly 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &mask, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (mask.len != 4) {
        PyErr_Format(PyExc_ValueError,
                     "mask must be 4 bytes long, not %zd", mask.len);
        PyBuffer_Release(&mask);
        return NULL;
    }
    memcpy(key, mask.buf, 4);
    PyBuffer_Release(&mask);

    /* Ask for strides too, so that a non-contiguous memoryview is accepted. */
    if (PyObject_GetBuffer(args[0], &data, PyBUF_STRIDED_RO) < 0) {
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL) {
        goto done;
    }
    if (PyBuffer_IsContiguous(&data, 'C')) {
        xor_mask(PyBytes_AS_STRING(result), (const char *)data.buf, data.len, key);
    }
    else {
        if (PyBuffer_ToContiguous(PyBytes_AS_STRING(result), &data, data.len, 'C') < 0) {
            Py_CLEAR(result);
            goto done;
        }
        xor_mask(PyBytes_AS_STRING(result), PyBytes_AS_STRING(result), data.len, key);
    }

done:
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL, apply_mask_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot speedups_slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "wsgiws._speedups",
    .m_doc = "Optional C accelerator of wsgiws: WebSocket payload masking.",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
