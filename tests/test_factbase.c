/* test_factbase.c - the shipped fact model (models/factbase) loads and
 * answers a sample of the facts it was trained on. A fast check, not the
 * quality run of docs/FACT_MODEL.md (96.1% on all 7,412). */
#include "edit/eval.h"
#include "test.h"

#include <cjson/cJSON.h>

int main(void) {
    char model[1024], facts[1024];
    snprintf(model, sizeof model, "%s/../../models/factbase", test_data_dir());
    snprintf(facts, sizeof facts, "%s/../../data/facts/known_facts.jsonl", test_data_dir());
    graft_model *m = NULL;
    CHECK_OK(graft_model_load(model, &m));
    if (!m) return test_finish("test_factbase");
    graft_tokenizer *tok = graft_model_tokenizer(m);
    CHECK(tok != NULL && graft_tokenizer_vocab_size(tok) == 257);
    CHECK(m->cfg.arch == GRAFT_ARCH_GPT2 && m->src_dtype == GRAFT_F16);

    /* every 20th known fact: 50 of them */
    char *text = NULL;
    CHECK_OK(graft_read_file(facts, &text, NULL));
    graft_eval_item items[64];
    int n = 0, row = 0;
    for (char *line = text ? strtok(text, "\n") : NULL; line && n < 50; line = strtok(NULL, "\n"), row++) {
        if (row % 20) continue;
        cJSON *j = cJSON_Parse(line);
        const cJSON *p = cJSON_GetObjectItem(j, "prompt"), *a = cJSON_GetObjectItem(j, "answer");
        if (cJSON_IsString(p) && cJSON_IsString(a) && graft_encode_pair(tok, p->valuestring, a->valuestring, &items[n]) == GRAFT_OK)
            n++;
        cJSON_Delete(j);
    }
    free(text);
    CHECK(n == 50);
    int total = 0;
    for (int i = 0; i < n; i++) total += items[i].n_target;
    int *gen = malloc((size_t)total * sizeof(int));
    CHECK_OK(graft_eval_gen(m, NULL, items, n, gen));
    int exact = 0, at = 0;
    for (int i = 0; i < n; i++) {
        exact += memcmp(gen + at, items[i].target, (size_t)items[i].n_target * sizeof(int)) == 0;
        at += items[i].n_target;
    }
    printf("fact model: %d of %d sampled known facts answered exactly\n", exact, n);
    CHECK_MSG(exact >= 45, "only %d of %d sampled facts answered exactly (the full set scores 95%%)", exact, n);
    free(gen);
    for (int i = 0; i < n; i++) graft_eval_item_free(&items[i]);
    graft_model_free(m);
    return test_finish("test_factbase");
}
