/* error.c - thread-local error messages behind graft_last_error(). */
#include "internal.h"

#include <stdio.h>
#include <string.h>

#define GRAFT_ERRMSG_MAX 1024

static _Thread_local char g_errmsg[GRAFT_ERRMSG_MAX];

const char *graft_status_str(graft_status st) {
    switch (st) {
    case GRAFT_OK: return "ok";
    case GRAFT_ERR_IO: return "I/O error";
    case GRAFT_ERR_FORMAT: return "format error";
    case GRAFT_ERR_INVALID: return "invalid argument";
    case GRAFT_ERR_NOMEM: return "out of memory";
    case GRAFT_ERR_UNSUPPORTED: return "unsupported";
    case GRAFT_ERR_RANGE: return "out of range";
    case GRAFT_ERR_INTERNAL: return "internal error";
    case GRAFT_ERR_EDIT_FAILED: return "edit failed";
    }
    return "unknown status";
}

const char *graft_last_error(void) { return g_errmsg; }
void graft_clear_error(void) { g_errmsg[0] = '\0'; }

graft_status graft_fail(graft_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_errmsg, sizeof g_errmsg, fmt, ap);
    va_end(ap);
    return st;
}

graft_status graft_fail_prefix(graft_status st, const char *fmt, ...) {
    char prefix[GRAFT_ERRMSG_MAX], old[GRAFT_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_errmsg, sizeof old);
    /* bounded widths: context first, then as much of the original as fits */
    snprintf(g_errmsg, sizeof g_errmsg, "%.400s: %.600s", prefix, old);
    return st;
}
