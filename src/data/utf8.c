/* utf8.c - strict UTF-8 validation: graft never passes invalid text on, so a
 * bad byte is reported where it enters (the data loaders) rather than as a
 * tokenizer oddity later. */
#include "data/dataset.h"

bool graft_utf8_valid(const char *s, size_t n, size_t *bad_off) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        /* lo/hi bound the first continuation byte: that is where overlongs
         * (E0, F0), UTF-16 surrogates (ED) and > U+10FFFF (F4) are excluded. */
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            else if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            else if (c == 0xF4) hi = 0x8F;
        } else goto bad; /* 80-BF stray continuation, C0/C1 overlong, F5-FF */
        if (n - i < len) goto bad;
        if (p[i + 1] < lo || p[i + 1] > hi) goto bad;
        for (size_t k = 2; k < len; k++)
            if ((p[i + k] & 0xC0) != 0x80) goto bad;
        i += len;
    }
    return true;
bad:
    if (bad_off) *bad_off = i;
    return false;
}
