/* adaptor.c - reopening a run or adaptor folder: its journal names the
 * method and options, and replaying it rebuilds the editor exactly. */
#include "journal.h"
#include "core/json_util.h"

#include <cjson/cJSON.h>

#include <stdlib.h>
#include <string.h>

graft_status graft_adaptor_open(graft_model *m, const char *dir, graft_editor **e_out, graft_journal **j_out) {
    *e_out = NULL;
    if (j_out) *j_out = NULL;
    graft_journal *j = NULL;
    GRAFT_TRY(graft_journal_open(dir, 0, &j));
    char *method = NULL, *opts = NULL, *fp = NULL;
    graft_status st = graft_journal_get_meta(j, "method", &method);
    if (st == GRAFT_OK) st = graft_journal_get_meta(j, "editor_options", &opts);
    if (st == GRAFT_OK) st = graft_journal_get_meta(j, "model_fingerprint", &fp);
    if (st == GRAFT_OK && (!method || !opts))
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: the journal lacks its method/editor_options settings", graft_journal_path(j));
    if (st == GRAFT_OK && fp) {
        char mine[128];
        graft_model_fingerprint(m, mine, sizeof mine);
        if (strcmp(mine, fp) != 0)
            st = graft_fail(GRAFT_ERR_INVALID, "%s: these edits were made on another model (%s); this one is %s",
                            graft_journal_path(j), fp, mine);
    }
    graft_editor *e = NULL;
    if (st == GRAFT_OK) st = graft_editor_create(m, method, opts, &e);
    if (st == GRAFT_OK) st = graft_journal_replay(j, e, NULL, NULL);
    free(method), free(opts), free(fp);
    if (st != GRAFT_OK) {
        if (e) e->ops->free(e);
        graft_journal_close(j);
        return st;
    }
    *e_out = e;
    if (j_out)
        *j_out = j;
    else
        graft_journal_close(j);
    return GRAFT_OK;
}

graft_status graft_export_provenance(const char *out_dir, const char *base_model, const char *adaptor, graft_editor *e,
                                     int64_t live_edits, graft_dtype dt) {
    char *opts = NULL;
    /* a PostgreSQL journal's URI is recorded without its password */
    char *shown = graft_journal_is_uri(adaptor) ? graft_journal_redact(adaptor) : NULL;
    if (graft_journal_is_uri(adaptor)) {
        if (!shown) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        adaptor = shown;
    }
    graft_status ost = graft_editor_opts_json(e, &opts);
    if (ost != GRAFT_OK) {
        free(shown);
        return ost;
    }
    cJSON *j = cJSON_CreateObject();
    /* every member or none: a failed add (out of memory) must not write a
     * file that silently lacks it */
    int ok = j && cJSON_AddStringToObject(j, "base_model", base_model ? base_model : "") &&
             cJSON_AddStringToObject(j, "adaptor", adaptor ? adaptor : "") &&
             cJSON_AddStringToObject(j, "method", e->ops->name) &&
             graft_json_put(j, "editor_options", cJSON_Parse(opts)) &&
             cJSON_AddNumberToObject(j, "live_edits", (double)live_edits) &&
             cJSON_AddStringToObject(j, "dtype", graft_dtype_name(dt));
    char *text = ok ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    free(opts);
    free(shown);
    char *path = graft_path_join(out_dir, "graft_export.json");
    graft_status st = text && path ? graft_write_file_atomic(path, text, strlen(text))
                                   : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    free(text);
    free(path);
    return st;
}
