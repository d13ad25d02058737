/*
 * check_rules.c — see check_rules.h.
 */
#include "check_rules.h"

#include "hash.h"

int rules_threshold(struct rules_run *run, int stored, int result, int succ_before,
                    int fail_before, int warn_before)
{
    if (result != RULES_CRITICAL) {
        run->succ++;
        run->fail = 0;
        /* as Consul, succ_before in a row before any success shows; one
         * that changes nothing shows at once (its output moves) */
        return run->succ >= succ_before || stored == result ? result : RULES_HOLD;
    }
    run->fail++;
    run->succ = 0;
    if (run->fail >= fail_before || stored == RULES_CRITICAL)
        return RULES_CRITICAL;
    if (warn_before > 0 && run->fail >= warn_before)
        return RULES_WARNING;
    return RULES_HOLD;
}

void rules_sp_init(struct rules_sp *sp, uint64_t now_ms)
{
    *sp = (struct rules_sp){.last_sec = now_ms / 1000};
}

void rules_sp_record(struct rules_sp *sp, uint64_t now_ms)
{
    sp->bucket[(now_ms / 1000) % RULES_SP_BUCKETS]++;
}

int rules_sp_update(struct rules_sp *sp, uint64_t now_ms, const struct rules_sp_limits *lim,
                    uint64_t total, uint64_t critical, uint64_t *recent)
{
    uint64_t sec = now_ms / 1000, window = lim->window_ms / 1000;
    if (window < 1)
        window = 1;
    if (window > RULES_SP_BUCKETS - 1)
        window = RULES_SP_BUCKETS - 1;
    /* clear the buckets that fell out of the window since the last update */
    for (uint64_t s = sp->last_sec + 1; s <= sec && s < sp->last_sec + RULES_SP_BUCKETS; s++)
        sp->bucket[(s + RULES_SP_BUCKETS - window) % RULES_SP_BUCKETS] = 0;
    sp->last_sec = sec;
    uint64_t n = 0;
    for (uint64_t i = 0; i < window; i++)
        n += sp->bucket[(sec + RULES_SP_BUCKETS - i) % RULES_SP_BUCKETS];
    *recent = n;
    double limit = lim->share * (double)total;
    if (!sp->active && total >= lim->min && (double)n > limit && lim->share < 1.0) {
        sp->active = true;
        return 1;
    }
    if (sp->active && (double)critical <= limit) {
        sp->active = false;
        return -1;
    }
    return 0;
}

bool rules_rendezvous_self(uint64_t key, uint64_t self, const uint64_t *live, size_t n)
{
    uint64_t best = hash_mix64(key ^ hash_mix64(self));
    for (size_t i = 0; i < n; i++)
        if (live[i] != self && hash_mix64(key ^ hash_mix64(live[i])) > best)
            return false;
    return true;
}
