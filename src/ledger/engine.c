/*
 * engine.c — the ledger's rules, applied in memory to one batch.
 *
 * The store loads (and locks) every row a commit touches into a
 * ledger_batch; this file applies account and transfer events to those
 * rows with TigerBeetle's rules and records what changed; the store then
 * writes the outputs in the same PostgreSQL transaction. No I/O here, so
 * the rules are tested directly (tests/unit/test_engine.c).
 *
 * Design decisions (the contract is ledger.h; these are the details):
 *
 * - Order of checks. Stateless checks (ledger_*_validate) run in enum
 *   order. Then the idempotency check: an id already stored (added with
 *   ledger_batch_add_transfer/_add_pending/_add_account) or applied
 *   earlier in this batch gives `exists` when the user fields match
 *   (ledger_*_same_fields) and `exists_with_different_fields` otherwise.
 *   Then the stateful checks, in enum order as far as the data allows
 *   (a post/void must find its pending transfer before it can compare
 *   accounts, so pending_transfer_not_found comes first for those).
 * - `exists` is success without effect: it does not fail a linked chain
 *   (a retried chain answers `exists` for every event), it is not counted
 *   as ok and it changes nothing. `exists_with_different_fields` is a
 *   failure and fails its chain. (TigerBeetle fails the chain on both;
 *   we prefer retries of a committed chain to read as plain `exists`.)
 * - Customer scope: an event with customer_id > 0 sees only accounts of
 *   that customer; any other account is reported exactly like a missing
 *   one (debit_/credit_account_not_found; pending_transfer_not_found when
 *   the pending's accounts are not the customer's). An idempotency match
 *   against a transfer whose accounts the customer cannot see is
 *   reported as exists_with_different_fields, never `exists`.
 *   customer_id 0 is the admin scope and sees everything.
 * - Post/void: omitted (zero) debit/credit/ledger/code are taken from the
 *   pending transfer and must match when given; post amount 0 posts the
 *   full amount, a smaller one posts part and releases the rest; void
 *   amount must be 0 or the pending amount. Expiry is judged at the
 *   call's now_us. A post needs both accounts open (*_account_closed); a
 *   void is allowed on closed accounts, since it only releases a
 *   reservation. Ok post/void events get the resolved fields written
 *   back, which is what the store stores and what idempotency compares.
 * - Linked chains: all events of a chain are applied in order with an
 *   undo log; the first failure rolls back every change of the chain
 *   (balances, pending states, outputs, ids, timestamps, fields written
 *   back into events); the failing event keeps its code and the others
 *   get linked_event_failed. A chain open at the end of a call gets
 *   linked_event_chain_open on every event and is not applied at all.
 * - Timestamps: each ok event takes the next of max(now_us, last+1),
 *   +1 ...; the clock survives ledger_batch_reset, so timestamps are
 *   strictly increasing over the whole life of a batch object.
 * - Money invariant: every balance write goes through account_write,
 *   which tracks sum(debits) - sum(credits) deltas, posted and pending.
 *   Each event touches one ledger (both accounts are asserted to share
 *   it), and the deltas are asserted to be zero after every event and
 *   after every call, so no call changes any ledger's net sum. Limit
 *   flags are asserted on every balance increase.
 * - Expiry (ledger_batch_expire): the pending must be known, in status
 *   PENDING, and expired at now_us; unknown -> pending_transfer_not_found,
 *   anything else (posted, voided, expired, not yet due, never expires,
 *   not a pending transfer) -> pending_transfer_not_pending. It releases
 *   the pending amounts, records an EXPIRED pending change and balance
 *   rows (transfer_id = the pending's id) but no transfer row.
 * - New accounts start with zero balances (written into the caller's
 *   event) and are usable by later transfer events of the same batch;
 *   the store inserts them from ledger_batch_new_accounts and, if later
 *   transfers changed them, updates them from
 *   ledger_batch_changed_accounts like any other account.
 *
 * Memory: every table is allocated once in ledger_batch_create, sized
 * from events_max; hash tables are open-addressing (linear probing) with
 * a power-of-two slot count at least twice their entry bound. Entries
 * are only ever removed last-in-first-out (chain undo, reset), which is
 * what makes removal from a linear-probing table safe without
 * tombstones.
 */
#include "ledger/ledger.h"

#include <stdlib.h>
#include <string.h>

#include "common/limits.h"
#include "common/mrd_assert.h"

/* Known ledgers (currencies) one batch can hold. */
#define ENGINE_LEDGERS_MAX 1024u
/* Largest events_max accepted, so entry indexes fit in uint32_t slots. */
#define ENGINE_EVENTS_MAX (1u << 24)

/* The generic chain loop works on codes shared by both result enums. */
enum {
    CODE_OK = 0,
    CODE_EXISTS = 1,
    CODE_EXISTS_WITH_DIFFERENT_FIELDS = 2,
    CODE_LINKED_EVENT_FAILED = 3,
    CODE_LINKED_EVENT_CHAIN_OPEN = 4,
};
_Static_assert((int)LEDGER_ACCOUNT_OK == CODE_OK && (int)LEDGER_TRANSFER_OK == CODE_OK,
               "ok codes shared");
_Static_assert((int)LEDGER_ACCOUNT_EXISTS == CODE_EXISTS &&
                   (int)LEDGER_TRANSFER_EXISTS == CODE_EXISTS,
               "exists codes shared");
_Static_assert((int)LEDGER_ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS ==
                       CODE_EXISTS_WITH_DIFFERENT_FIELDS &&
                   (int)LEDGER_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS ==
                       CODE_EXISTS_WITH_DIFFERENT_FIELDS,
               "exists_with_different_fields codes shared");
_Static_assert((int)LEDGER_ACCOUNT_LINKED_EVENT_FAILED == CODE_LINKED_EVENT_FAILED &&
                   (int)LEDGER_TRANSFER_LINKED_EVENT_FAILED == CODE_LINKED_EVENT_FAILED,
               "linked_event_failed codes shared");
_Static_assert((int)LEDGER_ACCOUNT_LINKED_EVENT_CHAIN_OPEN == CODE_LINKED_EVENT_CHAIN_OPEN &&
                   (int)LEDGER_TRANSFER_LINKED_EVENT_CHAIN_OPEN ==
                       CODE_LINKED_EVENT_CHAIN_OPEN,
               "linked_event_chain_open codes shared");
_Static_assert(LEDGER_AF_ALL == (LEDGER_AF_LINKED | LEDGER_AF_DEBITS_MUST_NOT_EXCEED_CREDITS |
                                 LEDGER_AF_CREDITS_MUST_NOT_EXCEED_DEBITS |
                                 LEDGER_AF_HISTORY | LEDGER_AF_CLOSED),
               "account flag mask");
_Static_assert(LEDGER_TF_ALL == (LEDGER_TF_LINKED | LEDGER_TF_PENDING |
                                 LEDGER_TF_POST_PENDING | LEDGER_TF_VOID_PENDING),
               "transfer flag mask");

/* ------------------------------------------------------------------ */
/* Result names: the stable strings of the HTTP API.                   */

static const char *const account_result_names[] = {
    [LEDGER_ACCOUNT_OK] = "ok",
    [LEDGER_ACCOUNT_EXISTS] = "exists",
    [LEDGER_ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS] = "exists_with_different_fields",
    [LEDGER_ACCOUNT_LINKED_EVENT_FAILED] = "linked_event_failed",
    [LEDGER_ACCOUNT_LINKED_EVENT_CHAIN_OPEN] = "linked_event_chain_open",
    [LEDGER_ACCOUNT_ID_MUST_NOT_BE_ZERO] = "id_must_not_be_zero",
    [LEDGER_ACCOUNT_FLAGS_ARE_MUTUALLY_EXCLUSIVE] = "flags_are_mutually_exclusive",
    [LEDGER_ACCOUNT_FLAGS_UNKNOWN] = "flags_unknown",
    [LEDGER_ACCOUNT_LEDGER_MUST_NOT_BE_ZERO] = "ledger_must_not_be_zero",
    [LEDGER_ACCOUNT_LEDGER_NOT_FOUND] = "ledger_not_found",
    [LEDGER_ACCOUNT_CUSTOMER_NOT_FOUND] = "customer_not_found",
};
_Static_assert(sizeof account_result_names / sizeof account_result_names[0] ==
                   LEDGER_ACCOUNT_RESULT_COUNT,
               "one name per account result");

static const char *const transfer_result_names[] = {
    [LEDGER_TRANSFER_OK] = "ok",
    [LEDGER_TRANSFER_EXISTS] = "exists",
    [LEDGER_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS] = "exists_with_different_fields",
    [LEDGER_TRANSFER_LINKED_EVENT_FAILED] = "linked_event_failed",
    [LEDGER_TRANSFER_LINKED_EVENT_CHAIN_OPEN] = "linked_event_chain_open",
    [LEDGER_TRANSFER_ID_MUST_NOT_BE_ZERO] = "id_must_not_be_zero",
    [LEDGER_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE] = "flags_are_mutually_exclusive",
    [LEDGER_TRANSFER_FLAGS_UNKNOWN] = "flags_unknown",
    [LEDGER_TRANSFER_DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO] = "debit_account_id_must_not_be_zero",
    [LEDGER_TRANSFER_CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO] = "credit_account_id_must_not_be_zero",
    [LEDGER_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT] = "accounts_must_be_different",
    [LEDGER_TRANSFER_PENDING_ID_MUST_BE_ZERO] = "pending_id_must_be_zero",
    [LEDGER_TRANSFER_PENDING_ID_MUST_NOT_BE_ZERO] = "pending_id_must_not_be_zero",
    [LEDGER_TRANSFER_PENDING_ID_MUST_BE_DIFFERENT] = "pending_id_must_be_different",
    [LEDGER_TRANSFER_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER] =
        "timeout_reserved_for_pending_transfer",
    [LEDGER_TRANSFER_TIMEOUT_TOO_LARGE] = "timeout_too_large",
    [LEDGER_TRANSFER_AMOUNT_MUST_BE_POSITIVE] = "amount_must_be_positive",
    [LEDGER_TRANSFER_LEDGER_MUST_NOT_BE_ZERO] = "ledger_must_not_be_zero",
    [LEDGER_TRANSFER_DEBIT_ACCOUNT_NOT_FOUND] = "debit_account_not_found",
    [LEDGER_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND] = "credit_account_not_found",
    [LEDGER_TRANSFER_ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER] = "accounts_must_have_the_same_ledger",
    [LEDGER_TRANSFER_TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS] =
        "transfer_must_have_the_same_ledger_as_accounts",
    [LEDGER_TRANSFER_DEBIT_ACCOUNT_CLOSED] = "debit_account_closed",
    [LEDGER_TRANSFER_CREDIT_ACCOUNT_CLOSED] = "credit_account_closed",
    [LEDGER_TRANSFER_PENDING_TRANSFER_NOT_FOUND] = "pending_transfer_not_found",
    [LEDGER_TRANSFER_PENDING_TRANSFER_NOT_PENDING] = "pending_transfer_not_pending",
    [LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID] =
        "pending_transfer_has_different_debit_account_id",
    [LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID] =
        "pending_transfer_has_different_credit_account_id",
    [LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_LEDGER] =
        "pending_transfer_has_different_ledger",
    [LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_CODE] = "pending_transfer_has_different_code",
    [LEDGER_TRANSFER_EXCEEDS_PENDING_TRANSFER_AMOUNT] = "exceeds_pending_transfer_amount",
    [LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT] =
        "pending_transfer_has_different_amount",
    [LEDGER_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED] = "pending_transfer_already_posted",
    [LEDGER_TRANSFER_PENDING_TRANSFER_ALREADY_VOIDED] = "pending_transfer_already_voided",
    [LEDGER_TRANSFER_PENDING_TRANSFER_EXPIRED] = "pending_transfer_expired",
    [LEDGER_TRANSFER_OVERFLOWS_DEBITS_PENDING] = "overflows_debits_pending",
    [LEDGER_TRANSFER_OVERFLOWS_CREDITS_PENDING] = "overflows_credits_pending",
    [LEDGER_TRANSFER_OVERFLOWS_DEBITS_POSTED] = "overflows_debits_posted",
    [LEDGER_TRANSFER_OVERFLOWS_CREDITS_POSTED] = "overflows_credits_posted",
    [LEDGER_TRANSFER_OVERFLOWS_DEBITS] = "overflows_debits",
    [LEDGER_TRANSFER_OVERFLOWS_CREDITS] = "overflows_credits",
    [LEDGER_TRANSFER_EXCEEDS_CREDITS] = "exceeds_credits",
    [LEDGER_TRANSFER_EXCEEDS_DEBITS] = "exceeds_debits",
};
_Static_assert(sizeof transfer_result_names / sizeof transfer_result_names[0] ==
                   LEDGER_TRANSFER_RESULT_COUNT,
               "one name per transfer result");

/* r must be a valid code (< *_RESULT_COUNT): anything else is a bug. */
const char *ledger_account_result_name(ledger_account_result r)
{
    mrd_assert((unsigned)r < LEDGER_ACCOUNT_RESULT_COUNT);
    mrd_assert(account_result_names[r] != NULL);
    return account_result_names[r];
}

const char *ledger_transfer_result_name(ledger_transfer_result r)
{
    mrd_assert((unsigned)r < LEDGER_TRANSFER_RESULT_COUNT);
    mrd_assert(transfer_result_names[r] != NULL);
    return transfer_result_names[r];
}

/* ------------------------------------------------------------------ */
/* Stateless validation and idempotency comparison.                    */

ledger_account_result ledger_account_validate(const ledger_account *a)
{
    if (id128_is_zero(&a->id))
        return LEDGER_ACCOUNT_ID_MUST_NOT_BE_ZERO;
    if ((a->flags & LEDGER_AF_DEBITS_MUST_NOT_EXCEED_CREDITS) &&
        (a->flags & LEDGER_AF_CREDITS_MUST_NOT_EXCEED_DEBITS))
        return LEDGER_ACCOUNT_FLAGS_ARE_MUTUALLY_EXCLUSIVE;
    if (a->flags & ~LEDGER_AF_ALL)
        return LEDGER_ACCOUNT_FLAGS_UNKNOWN;
    if (a->ledger == 0)
        return LEDGER_ACCOUNT_LEDGER_MUST_NOT_BE_ZERO;
    /* A negative ledger cannot be in the ledgers table. */
    if (a->ledger < 0)
        return LEDGER_ACCOUNT_LEDGER_NOT_FOUND;
    if (a->customer_id <= 0)
        return LEDGER_ACCOUNT_CUSTOMER_NOT_FOUND;
    return LEDGER_ACCOUNT_OK;
}

static bool transfer_is_post_or_void(const ledger_transfer *t)
{
    return (t->flags & (LEDGER_TF_POST_PENDING | LEDGER_TF_VOID_PENDING)) != 0;
}

ledger_transfer_result ledger_transfer_validate(const ledger_transfer *t)
{
    /* The codec refuses negative amounts (400 invalid_field). */
    mrd_assert(t->amount >= 0);

    if (id128_is_zero(&t->id))
        return LEDGER_TRANSFER_ID_MUST_NOT_BE_ZERO;
    uint32_t kind = t->flags & (LEDGER_TF_PENDING | LEDGER_TF_POST_PENDING |
                                LEDGER_TF_VOID_PENDING);
    if (kind & (kind - 1u))
        return LEDGER_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE;
    if (t->flags & ~LEDGER_TF_ALL)
        return LEDGER_TRANSFER_FLAGS_UNKNOWN;

    bool post_or_void = transfer_is_post_or_void(t);
    bool pending = (t->flags & LEDGER_TF_PENDING) != 0;
    bool debit_zero = id128_is_zero(&t->debit_account_id);
    bool credit_zero = id128_is_zero(&t->credit_account_id);
    if (!post_or_void) {
        if (debit_zero)
            return LEDGER_TRANSFER_DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO;
        if (credit_zero)
            return LEDGER_TRANSFER_CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO;
    }
    if (!debit_zero && !credit_zero &&
        id128_equal(&t->debit_account_id, &t->credit_account_id))
        return LEDGER_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT;

    if (post_or_void) {
        if (id128_is_zero(&t->pending_id))
            return LEDGER_TRANSFER_PENDING_ID_MUST_NOT_BE_ZERO;
        if (id128_equal(&t->pending_id, &t->id))
            return LEDGER_TRANSFER_PENDING_ID_MUST_BE_DIFFERENT;
    } else if (!id128_is_zero(&t->pending_id)) {
        return LEDGER_TRANSFER_PENDING_ID_MUST_BE_ZERO;
    }

    if (!pending && t->timeout_s != 0)
        return LEDGER_TRANSFER_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER;
    if (t->timeout_s > LIMIT_TIMEOUT_S_MAX)
        return LEDGER_TRANSFER_TIMEOUT_TOO_LARGE;

    /* Post: 0 = the full pending amount; void: checked against the
     * pending (pending_transfer_has_different_amount). */
    if (!post_or_void && t->amount == 0)
        return LEDGER_TRANSFER_AMOUNT_MUST_BE_POSITIVE;
    if (!post_or_void && t->ledger == 0)
        return LEDGER_TRANSFER_LEDGER_MUST_NOT_BE_ZERO;
    return LEDGER_TRANSFER_OK;
}

bool ledger_account_same_fields(const ledger_account *a, const ledger_account *b)
{
    return id128_equal(&a->id, &b->id) && a->ledger == b->ledger && a->code == b->code &&
           a->flags == b->flags && id128_equal(&a->user_data_128, &b->user_data_128) &&
           a->user_data_64 == b->user_data_64 && a->user_data_32 == b->user_data_32 &&
           a->customer_id == b->customer_id;
}

static bool metadata_equal(const ledger_transfer *a, const ledger_transfer *b)
{
    if (a->metadata_len != b->metadata_len)
        return false;
    if (a->metadata_len == 0)
        return true;
    mrd_assert(a->metadata != NULL && b->metadata != NULL);
    return memcmp(a->metadata, b->metadata, a->metadata_len) == 0;
}

/* Compares what the client chose. For post/void the request may omit
 * (send zero) debit/credit/ledger/code/amount; those match whatever the
 * stored, resolved transfer holds. */
bool ledger_transfer_same_fields(const ledger_transfer *stored, const ledger_transfer *request)
{
    if (!id128_equal(&stored->id, &request->id) || stored->flags != request->flags ||
        !id128_equal(&stored->pending_id, &request->pending_id) ||
        stored->timeout_s != request->timeout_s ||
        !id128_equal(&stored->user_data_128, &request->user_data_128) ||
        stored->user_data_64 != request->user_data_64 ||
        stored->user_data_32 != request->user_data_32 || !metadata_equal(stored, request))
        return false;

    bool wild = transfer_is_post_or_void(request);
    if (!(wild && id128_is_zero(&request->debit_account_id)) &&
        !id128_equal(&stored->debit_account_id, &request->debit_account_id))
        return false;
    if (!(wild && id128_is_zero(&request->credit_account_id)) &&
        !id128_equal(&stored->credit_account_id, &request->credit_account_id))
        return false;
    if (!(wild && request->ledger == 0) && stored->ledger != request->ledger)
        return false;
    if (!(wild && request->code == 0) && stored->code != request->code)
        return false;
    if (!(wild && request->amount == 0) && stored->amount != request->amount)
        return false;
    return true;
}

/* ------------------------------------------------------------------ */
/* id_index: open addressing from id128 to a dense entry number.       */

typedef struct id_index {
    uint32_t *slots; /* entry + 1; 0 = empty */
    id128 *keys;     /* keys[entry] */
    size_t slot_mask;
    size_t count; /* entries 0..count-1 are live */
    size_t max;
} id_index;

static int id_index_init(id_index *ix, size_t max)
{
    size_t slots = 16;
    while (slots < 2 * max)
        slots <<= 1;
    ix->slots = calloc(slots, sizeof *ix->slots);
    ix->keys = calloc(max, sizeof *ix->keys);
    ix->slot_mask = slots - 1;
    ix->count = 0;
    ix->max = max;
    return (ix->slots != NULL && ix->keys != NULL) ? 0 : -1;
}

static void id_index_release(id_index *ix)
{
    free(ix->slots);
    free(ix->keys);
    ix->slots = NULL;
    ix->keys = NULL;
}

/* Returns the entry holding id, or -1. */
static ptrdiff_t id_index_find(const id_index *ix, const id128 *id)
{
    size_t s = (size_t)id128_hash(id) & ix->slot_mask;
    for (size_t probe = 0; probe <= ix->slot_mask; probe++) {
        uint32_t e = ix->slots[s];
        if (e == 0)
            return -1;
        if (id128_equal(&ix->keys[e - 1], id))
            return (ptrdiff_t)(e - 1);
        s = (s + 1) & ix->slot_mask;
    }
    return -1;
}

/* Append id (which must not be present) as a new entry. Returns the entry,
 * or -1 when the bound is reached. The table is never more than half
 * full, so probing always finds an empty slot. */
static ptrdiff_t id_index_insert(id_index *ix, const id128 *id)
{
    if (ix->count >= ix->max)
        return -1;
    size_t s = (size_t)id128_hash(id) & ix->slot_mask;
    for (size_t probe = 0; probe <= ix->slot_mask; probe++) {
        if (ix->slots[s] == 0) {
            size_t e = ix->count++;
            ix->keys[e] = *id;
            ix->slots[s] = (uint32_t)(e + 1);
            return (ptrdiff_t)e;
        }
        mrd_assert(!id128_equal(&ix->keys[ix->slots[s] - 1], id));
        s = (s + 1) & ix->slot_mask;
    }
    mrd_assert(!"id_index full");
    return -1;
}

/* Remove the newest entry. Safe with linear probing because nothing
 * inserted before it can have probed past its slot. */
static void id_index_pop(id_index *ix)
{
    mrd_assert(ix->count > 0);
    size_t e = ix->count - 1;
    size_t s = (size_t)id128_hash(&ix->keys[e]) & ix->slot_mask;
    for (size_t probe = 0; probe <= ix->slot_mask; probe++) {
        if (ix->slots[s] == e + 1) {
            ix->slots[s] = 0;
            ix->count = e;
            return;
        }
        mrd_assert(ix->slots[s] != 0);
        s = (s + 1) & ix->slot_mask;
    }
    mrd_assert(!"id_index entry not found");
}

static void id_index_truncate(id_index *ix, size_t count)
{
    while (ix->count > count)
        id_index_pop(ix);
}

/* ------------------------------------------------------------------ */
/* The batch.                                                          */

typedef struct balances {
    int64_t debits_pending;
    int64_t debits_posted;
    int64_t credits_pending;
    int64_t credits_posted;
} balances;

typedef struct pending_entry {
    const ledger_transfer *t; /* the pending transfer */
    ledger_pending_state state;
    ptrdiff_t change; /* index into pending_changes, or -1 */
} pending_entry;

typedef enum {
    UNDO_ACCOUNT_BALANCES = 1,
    UNDO_PENDING_STATE,
    UNDO_TRANSFER_EVENT,
    UNDO_ACCOUNT_EVENT,
} undo_kind;

/* One in-place change made inside a linked chain, with the old value. */
typedef struct undo_record {
    undo_kind kind;
    union {
        struct {
            size_t account;
            balances old;
        } acct;
        struct {
            size_t pending;
            ledger_pending_state old_state;
            ptrdiff_t old_change;
            bool had_change_contents;
            ledger_pending_change old_contents;
        } pend;
        struct {
            ledger_transfer *event;
            id128 debit_account_id;
            id128 credit_account_id;
            int64_t amount;
            int64_t timestamp_us;
            int32_t ledger;
            int32_t code;
        } tev;
        struct {
            ledger_account *event;
            balances old;
            int64_t timestamp_us;
        } aev;
    } u;
} undo_record;

/* Sizes of the append-only outputs and tables when a chain started. */
typedef struct undo_mark {
    size_t accounts;
    size_t transfers;
    size_t pendings;
    size_t new_transfers;
    size_t new_accounts;
    size_t pending_changes;
    size_t balance_rows;
    size_t changed;
    int64_t next_ts;
} undo_mark;

/* The sorted view of the changed accounts, built lazily by the const
 * accessor ledger_batch_changed_accounts (hence behind a pointer). */
typedef struct changed_view {
    const ledger_account **sorted;
    uint64_t generation; /* of the changed list it was built from */
    bool valid;
} changed_view;

struct ledger_batch {
    size_t events_max;
    size_t events_used; /* events passed to apply_* since reset */

    /* Accounts: stored (added) and created in this batch. */
    id_index accounts_ix;
    ledger_account *accounts; /* [accounts_ix.max] */
    bool *account_changed;    /* [accounts_ix.max] */
    size_t accounts_added;

    /* Transfers known by id: stored (copies) and applied in this batch
     * (pointers into the callers' events). */
    id_index transfers_ix;
    const ledger_transfer **transfers; /* [transfers_ix.max] */
    ledger_transfer *transfer_copies;  /* [events_max] */
    size_t transfer_copies_n;

    /* Pending transfers: stored (copies) and created in this batch. */
    id_index pendings_ix;
    pending_entry *pendings;          /* [pendings_ix.max] */
    ledger_transfer *pending_copies;  /* [events_max] */
    size_t pending_copies_n;

    /* Known ledgers: open addressing over int32 (0 = empty). */
    int32_t *ledger_slots; /* [2 * ENGINE_LEDGERS_MAX] */
    int32_t *ledger_list;  /* [ENGINE_LEDGERS_MAX], for reset */
    size_t ledgers_n;

    /* Outputs. */
    const ledger_transfer **new_transfers; /* [events_max] */
    size_t new_transfers_n;
    const ledger_account **new_accounts; /* [events_max] */
    size_t new_accounts_n;
    ledger_pending_change *pending_changes; /* [pendings_ix.max] */
    size_t pending_changes_n;
    ledger_balance_row *balance_rows; /* [balance_rows_max] */
    size_t balance_rows_n;
    size_t balance_rows_max;
    const ledger_account **changed; /* [accounts_ix.max], unsorted */
    size_t changed_n;
    uint64_t changed_generation;
    changed_view *view;

    /* Linked chains. */
    undo_record *undo; /* [undo_max] */
    size_t undo_n;
    size_t undo_max;

    /* Clock: the next timestamp to hand out. Survives reset. */
    int64_t next_ts;

    /* Money invariant: sum(debits) - sum(credits) changes in this call. */
    __int128 delta_posted;
    __int128 delta_pending;
};

void ledger_batch_free(ledger_batch *b)
{
    if (b == NULL)
        return;
    id_index_release(&b->accounts_ix);
    id_index_release(&b->transfers_ix);
    id_index_release(&b->pendings_ix);
    free(b->accounts);
    free(b->account_changed);
    free(b->transfers);
    free(b->transfer_copies);
    free(b->pendings);
    free(b->pending_copies);
    free(b->ledger_slots);
    free(b->ledger_list);
    free(b->new_transfers);
    free(b->new_accounts);
    free(b->pending_changes);
    free(b->balance_rows);
    free(b->changed);
    if (b->view != NULL)
        free(b->view->sorted);
    free(b->view);
    free(b->undo);
    free(b);
}

/* events_max must be 1..2^24; returns NULL otherwise or when out of
 * memory. Everything the batch will ever need is allocated here. */
ledger_batch *ledger_batch_create(size_t events_max)
{
    if (events_max == 0 || events_max > ENGINE_EVENTS_MAX)
        return NULL;
    ledger_batch *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    b->events_max = events_max;

    /* Accounts: 2 per event loaded by the store, plus one per account
     * event created. Transfers and pendings: events_max loaded plus
     * events_max applied. */
    size_t accounts_max = 3 * events_max;
    size_t known_max = 2 * events_max;
    if (id_index_init(&b->accounts_ix, accounts_max) != 0 ||
        id_index_init(&b->transfers_ix, known_max) != 0 ||
        id_index_init(&b->pendings_ix, known_max) != 0)
        goto fail;
    b->accounts = calloc(accounts_max, sizeof *b->accounts);
    b->account_changed = calloc(accounts_max, sizeof *b->account_changed);
    b->transfers = calloc(known_max, sizeof *b->transfers);
    b->transfer_copies = calloc(events_max, sizeof *b->transfer_copies);
    b->pendings = calloc(known_max, sizeof *b->pendings);
    b->pending_copies = calloc(events_max, sizeof *b->pending_copies);
    b->ledger_slots = calloc(2 * ENGINE_LEDGERS_MAX, sizeof *b->ledger_slots);
    b->ledger_list = calloc(ENGINE_LEDGERS_MAX, sizeof *b->ledger_list);
    b->new_transfers = calloc(events_max, sizeof *b->new_transfers);
    b->new_accounts = calloc(events_max, sizeof *b->new_accounts);
    /* One change record per pending entry at most (later changes of the
     * same pending update its record). */
    b->pending_changes = calloc(known_max, sizeof *b->pending_changes);
    /* Two sides per applied event plus two per expiry; a pending entry
     * (loaded or created here, 2*events_max of them) expires at most
     * once, since expiry is never undone. */
    b->balance_rows_max = 2 * events_max + 2 * (2 * events_max);
    b->balance_rows = calloc(b->balance_rows_max, sizeof *b->balance_rows);
    b->changed = calloc(accounts_max, sizeof *b->changed);
    b->view = calloc(1, sizeof *b->view);
    if (b->view != NULL)
        b->view->sorted = calloc(accounts_max, sizeof *b->view->sorted);
    /* Per event at most: the event itself, two accounts, one pending. */
    b->undo_max = 4 * events_max;
    b->undo = calloc(b->undo_max, sizeof *b->undo);
    if (b->accounts == NULL || b->account_changed == NULL || b->transfers == NULL ||
        b->transfer_copies == NULL || b->pendings == NULL || b->pending_copies == NULL ||
        b->ledger_slots == NULL || b->ledger_list == NULL || b->new_transfers == NULL ||
        b->new_accounts == NULL || b->pending_changes == NULL || b->balance_rows == NULL ||
        b->changed == NULL || b->view == NULL || b->view->sorted == NULL || b->undo == NULL)
        goto fail;
    return b;

fail:
    ledger_batch_free(b);
    return NULL;
}

/* The slot holding ledger, or else the empty slot where it would go;
 * -1 only if the table were full (it is kept at most half full). */
static ptrdiff_t ledger_slot(const ledger_batch *b, int32_t ledger)
{
    size_t mask = 2 * ENGINE_LEDGERS_MAX - 1;
    size_t s = (size_t)(uint32_t)ledger & mask;
    for (size_t probe = 0; probe <= mask; probe++) {
        if (b->ledger_slots[s] == 0 || b->ledger_slots[s] == ledger)
            return (ptrdiff_t)s;
        s = (s + 1) & mask;
    }
    return -1;
}

/* Forget every row and output; O(rows used). The clock is kept. */
void ledger_batch_reset(ledger_batch *b)
{
    for (size_t i = 0; i < b->changed_n; i++)
        b->account_changed[b->changed[i] - b->accounts] = false;
    b->changed_n = 0;
    b->changed_generation++;
    id_index_truncate(&b->accounts_ix, 0);
    id_index_truncate(&b->transfers_ix, 0);
    id_index_truncate(&b->pendings_ix, 0);
    b->accounts_added = 0;
    b->transfer_copies_n = 0;
    b->pending_copies_n = 0;
    /* Remove newest first, like id_index_pop, so probing stays valid. */
    while (b->ledgers_n > 0) {
        ptrdiff_t s = ledger_slot(b, b->ledger_list[--b->ledgers_n]);
        mrd_assert(s >= 0 && b->ledger_slots[s] != 0);
        b->ledger_slots[s] = 0;
    }
    b->new_transfers_n = 0;
    b->new_accounts_n = 0;
    b->pending_changes_n = 0;
    b->balance_rows_n = 0;
    b->undo_n = 0;
    b->events_used = 0;
}

/* ---- Loading rows. */

int ledger_batch_add_account(ledger_batch *b, const ledger_account *a)
{
    if (id_index_find(&b->accounts_ix, &a->id) >= 0)
        return 0;
    if (b->accounts_added >= 2 * b->events_max)
        return -1;
    ptrdiff_t e = id_index_insert(&b->accounts_ix, &a->id);
    if (e < 0)
        return -1;
    b->accounts[e] = *a;
    b->account_changed[e] = false;
    b->accounts_added++;
    return 0;
}

int ledger_batch_add_transfer(ledger_batch *b, const ledger_transfer *t)
{
    if (id_index_find(&b->transfers_ix, &t->id) >= 0)
        return 0;
    if (b->transfer_copies_n >= b->events_max)
        return -1;
    ptrdiff_t e = id_index_insert(&b->transfers_ix, &t->id);
    if (e < 0)
        return -1;
    ledger_transfer *copy = &b->transfer_copies[b->transfer_copies_n++];
    *copy = *t;
    b->transfers[e] = copy;
    return 0;
}

int ledger_batch_add_pending(ledger_batch *b, const ledger_transfer *pending,
                             const ledger_pending_state *state)
{
    if (id_index_find(&b->pendings_ix, &pending->id) >= 0)
        return 0;
    if (b->pending_copies_n >= b->events_max)
        return -1;
    ptrdiff_t e = id_index_insert(&b->pendings_ix, &pending->id);
    if (e < 0)
        return -1;
    ledger_transfer *copy = &b->pending_copies[b->pending_copies_n++];
    *copy = *pending;
    b->pendings[e] = (pending_entry){.t = copy, .state = *state, .change = -1};
    return 0;
}

static bool ledger_known(const ledger_batch *b, int32_t ledger)
{
    if (ledger <= 0)
        return false;
    ptrdiff_t s = ledger_slot(b, ledger);
    return s >= 0 && b->ledger_slots[s] == ledger;
}

/* ledger must be > 0. Returns 0, or -1 for ledger <= 0 or past
 * ENGINE_LEDGERS_MAX ledgers. Adding a known ledger again is a no-op. */
int ledger_batch_add_ledger(ledger_batch *b, int32_t ledger)
{
    if (ledger <= 0)
        return -1;
    if (ledger_known(b, ledger))
        return 0;
    if (b->ledgers_n >= ENGINE_LEDGERS_MAX)
        return -1;
    ptrdiff_t s = ledger_slot(b, ledger);
    mrd_assert(s >= 0 && b->ledger_slots[s] == 0); /* at most half full */
    b->ledger_slots[s] = ledger;
    b->ledger_list[b->ledgers_n++] = ledger;
    return 0;
}

/* ---- Lookups. */

/* The account with this id as seen by customer_id (0 = admin), or NULL:
 * another customer's account is exactly as invisible as a missing one. */
static ledger_account *account_find_scoped(ledger_batch *b, const id128 *id,
                                           int64_t customer_id)
{
    ptrdiff_t e = id_index_find(&b->accounts_ix, id);
    if (e < 0)
        return NULL;
    ledger_account *a = &b->accounts[e];
    if (customer_id > 0 && a->customer_id != customer_id)
        return NULL;
    return a;
}

static pending_entry *pending_find(ledger_batch *b, const id128 *id)
{
    ptrdiff_t e = id_index_find(&b->pendings_ix, id);
    return e < 0 ? NULL : &b->pendings[e];
}

/* A transfer with this id stored or applied in this batch, or NULL. */
static const ledger_transfer *transfer_find(ledger_batch *b, const id128 *id)
{
    ptrdiff_t e = id_index_find(&b->transfers_ix, id);
    if (e >= 0)
        return b->transfers[e];
    pending_entry *p = pending_find(b, id);
    return p == NULL ? NULL : p->t;
}

/* ---- Undo log and balance writes. */

static undo_record *undo_push(ledger_batch *b, undo_kind kind)
{
    mrd_assert(b->undo_n < b->undo_max);
    undo_record *u = &b->undo[b->undo_n++];
    memset(u, 0, sizeof *u);
    u->kind = kind;
    return u;
}

static balances account_balances(const ledger_account *a)
{
    return (balances){a->debits_pending, a->debits_posted, a->credits_pending,
                      a->credits_posted};
}

/* Write new balances, tracking the money deltas and asserting the limit
 * flags whenever a side grows. */
static void account_write(ledger_batch *b, ledger_account *a, const balances *nb)
{
    mrd_assert(nb->debits_pending >= 0 && nb->debits_posted >= 0 &&
               nb->credits_pending >= 0 && nb->credits_posted >= 0);
    __int128 old_debits = (__int128)a->debits_pending + a->debits_posted;
    __int128 old_credits = (__int128)a->credits_pending + a->credits_posted;
    __int128 new_debits = (__int128)nb->debits_pending + nb->debits_posted;
    __int128 new_credits = (__int128)nb->credits_pending + nb->credits_posted;

    b->delta_posted += ((__int128)nb->debits_posted - a->debits_posted) -
                       ((__int128)nb->credits_posted - a->credits_posted);
    b->delta_pending += ((__int128)nb->debits_pending - a->debits_pending) -
                        ((__int128)nb->credits_pending - a->credits_pending);

    if ((a->flags & LEDGER_AF_DEBITS_MUST_NOT_EXCEED_CREDITS) && new_debits > old_debits)
        mrd_assert(new_debits <= nb->credits_posted);
    if ((a->flags & LEDGER_AF_CREDITS_MUST_NOT_EXCEED_DEBITS) && new_credits > old_credits)
        mrd_assert(new_credits <= nb->debits_posted);

    a->debits_pending = nb->debits_pending;
    a->debits_posted = nb->debits_posted;
    a->credits_pending = nb->credits_pending;
    a->credits_posted = nb->credits_posted;
}

/* Change an account's balances inside the current chain (undoable) and
 * list it among the changed accounts. */
static void account_change(ledger_batch *b, ledger_account *a, const balances *nb)
{
    size_t e = (size_t)(a - b->accounts);
    mrd_assert(e < b->accounts_ix.count);
    undo_record *u = undo_push(b, UNDO_ACCOUNT_BALANCES);
    u->u.acct.account = e;
    u->u.acct.old = account_balances(a);
    account_write(b, a, nb);
    if (!b->account_changed[e]) {
        b->account_changed[e] = true;
        mrd_assert(b->changed_n < b->accounts_ix.max);
        b->changed[b->changed_n++] = a;
        b->changed_generation++;
    }
}

/* Set a pending's state (undoable) and record it among the changes:
 * one record per pending, updated in place on later changes. */
static void pending_set_state(ledger_batch *b, pending_entry *p, const ledger_pending_state *st)
{
    undo_record *u = undo_push(b, UNDO_PENDING_STATE);
    u->u.pend.pending = (size_t)(p - b->pendings);
    u->u.pend.old_state = p->state;
    u->u.pend.old_change = p->change;
    if (p->change >= 0) {
        u->u.pend.had_change_contents = true;
        u->u.pend.old_contents = b->pending_changes[p->change];
    }
    p->state = *st;
    if (p->change < 0) {
        mrd_assert(b->pending_changes_n < b->pendings_ix.max);
        p->change = (ptrdiff_t)b->pending_changes_n++;
        b->pending_changes[p->change] =
            (ledger_pending_change){.pending_id = p->t->id, .is_new = false};
    }
    b->pending_changes[p->change].state = *st;
}

static void balance_row_add(ledger_batch *b, const ledger_account *a, const id128 *transfer_id,
                            int64_t timestamp_us)
{
    if (!(a->flags & LEDGER_AF_HISTORY))
        return;
    mrd_assert(b->balance_rows_n < b->balance_rows_max);
    b->balance_rows[b->balance_rows_n++] = (ledger_balance_row){
        .account_id = a->id,
        .transfer_id = *transfer_id,
        .timestamp_us = timestamp_us,
        .debits_pending = a->debits_pending,
        .debits_posted = a->debits_posted,
        .credits_pending = a->credits_pending,
        .credits_posted = a->credits_posted,
    };
}

static undo_mark undo_mark_take(ledger_batch *b)
{
    b->undo_n = 0;
    return (undo_mark){
        .accounts = b->accounts_ix.count,
        .transfers = b->transfers_ix.count,
        .pendings = b->pendings_ix.count,
        .new_transfers = b->new_transfers_n,
        .new_accounts = b->new_accounts_n,
        .pending_changes = b->pending_changes_n,
        .balance_rows = b->balance_rows_n,
        .changed = b->changed_n,
        .next_ts = b->next_ts,
    };
}

/* Undo everything since m: in-place changes newest first, then the
 * appended entries and outputs. */
static void undo_rollback(ledger_batch *b, const undo_mark *m)
{
    while (b->undo_n > 0) {
        undo_record *u = &b->undo[--b->undo_n];
        switch (u->kind) {
        case UNDO_ACCOUNT_BALANCES:
            account_write(b, &b->accounts[u->u.acct.account], &u->u.acct.old);
            break;
        case UNDO_PENDING_STATE: {
            pending_entry *p = &b->pendings[u->u.pend.pending];
            if (u->u.pend.had_change_contents)
                b->pending_changes[u->u.pend.old_change] = u->u.pend.old_contents;
            p->state = u->u.pend.old_state;
            p->change = u->u.pend.old_change;
            break;
        }
        case UNDO_TRANSFER_EVENT: {
            ledger_transfer *t = u->u.tev.event;
            t->debit_account_id = u->u.tev.debit_account_id;
            t->credit_account_id = u->u.tev.credit_account_id;
            t->amount = u->u.tev.amount;
            t->timestamp_us = u->u.tev.timestamp_us;
            t->ledger = u->u.tev.ledger;
            t->code = u->u.tev.code;
            break;
        }
        case UNDO_ACCOUNT_EVENT: {
            ledger_account *a = u->u.aev.event;
            a->debits_pending = u->u.aev.old.debits_pending;
            a->debits_posted = u->u.aev.old.debits_posted;
            a->credits_pending = u->u.aev.old.credits_pending;
            a->credits_posted = u->u.aev.old.credits_posted;
            a->timestamp_us = u->u.aev.timestamp_us;
            break;
        }
        default:
            mrd_assert(!"unknown undo record");
        }
    }
    while (b->changed_n > m->changed) {
        const ledger_account *a = b->changed[--b->changed_n];
        b->account_changed[a - b->accounts] = false;
        b->changed_generation++;
    }
    id_index_truncate(&b->accounts_ix, m->accounts);
    id_index_truncate(&b->transfers_ix, m->transfers);
    id_index_truncate(&b->pendings_ix, m->pendings);
    b->new_transfers_n = m->new_transfers;
    b->new_accounts_n = m->new_accounts;
    b->pending_changes_n = m->pending_changes;
    b->balance_rows_n = m->balance_rows;
    b->next_ts = m->next_ts;
}

/* Save the fields of a transfer event the engine writes back. */
static void undo_transfer_event(ledger_batch *b, ledger_transfer *t)
{
    undo_record *u = undo_push(b, UNDO_TRANSFER_EVENT);
    u->u.tev.event = t;
    u->u.tev.debit_account_id = t->debit_account_id;
    u->u.tev.credit_account_id = t->credit_account_id;
    u->u.tev.amount = t->amount;
    u->u.tev.timestamp_us = t->timestamp_us;
    u->u.tev.ledger = t->ledger;
    u->u.tev.code = t->code;
}

/* ------------------------------------------------------------------ */
/* Transfers.                                                          */

/* Idempotency: CODE_OK when the id is new, else exists or
 * exists_with_different_fields. */
static ledger_transfer_result transfer_exists(ledger_batch *b, const ledger_transfer *t)
{
    const ledger_transfer *stored = transfer_find(b, &t->id);
    if (stored == NULL)
        return LEDGER_TRANSFER_OK;
    if (!ledger_transfer_same_fields(stored, t))
        return LEDGER_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS;
    /* Do not confirm another customer's transfer. */
    if (t->customer_id > 0 &&
        (account_find_scoped(b, &stored->debit_account_id, t->customer_id) == NULL ||
         account_find_scoped(b, &stored->credit_account_id, t->customer_id) == NULL))
        return LEDGER_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS;
    return LEDGER_TRANSFER_EXISTS;
}

static void transfer_record(ledger_batch *b, ledger_transfer *t)
{
    ptrdiff_t e = id_index_insert(&b->transfers_ix, &t->id);
    mrd_assert(e >= 0); /* bounded by events_used <= events_max */
    b->transfers[e] = t;
    mrd_assert(b->new_transfers_n < b->events_max);
    b->new_transfers[b->new_transfers_n++] = t;
}

/* A plain or pending transfer. */
static ledger_transfer_result transfer_create(ledger_batch *b, ledger_transfer *t)
{
    ledger_account *dr = account_find_scoped(b, &t->debit_account_id, t->customer_id);
    if (dr == NULL)
        return LEDGER_TRANSFER_DEBIT_ACCOUNT_NOT_FOUND;
    ledger_account *cr = account_find_scoped(b, &t->credit_account_id, t->customer_id);
    if (cr == NULL)
        return LEDGER_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND;
    mrd_assert(dr != cr);
    if (dr->ledger != cr->ledger)
        return LEDGER_TRANSFER_ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER;
    if (t->ledger != dr->ledger)
        return LEDGER_TRANSFER_TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS;
    if (dr->flags & LEDGER_AF_CLOSED)
        return LEDGER_TRANSFER_DEBIT_ACCOUNT_CLOSED;
    if (cr->flags & LEDGER_AF_CLOSED)
        return LEDGER_TRANSFER_CREDIT_ACCOUNT_CLOSED;

    bool pending = (t->flags & LEDGER_TF_PENDING) != 0;
    balances nd = account_balances(dr);
    balances nc = account_balances(cr);
    if (pending) {
        if (__builtin_add_overflow(nd.debits_pending, t->amount, &nd.debits_pending))
            return LEDGER_TRANSFER_OVERFLOWS_DEBITS_PENDING;
        if (__builtin_add_overflow(nc.credits_pending, t->amount, &nc.credits_pending))
            return LEDGER_TRANSFER_OVERFLOWS_CREDITS_PENDING;
    } else {
        if (__builtin_add_overflow(nd.debits_posted, t->amount, &nd.debits_posted))
            return LEDGER_TRANSFER_OVERFLOWS_DEBITS_POSTED;
        if (__builtin_add_overflow(nc.credits_posted, t->amount, &nc.credits_posted))
            return LEDGER_TRANSFER_OVERFLOWS_CREDITS_POSTED;
    }
    int64_t debits, credits;
    if (__builtin_add_overflow(nd.debits_pending, nd.debits_posted, &debits))
        return LEDGER_TRANSFER_OVERFLOWS_DEBITS;
    if (__builtin_add_overflow(nc.credits_pending, nc.credits_posted, &credits))
        return LEDGER_TRANSFER_OVERFLOWS_CREDITS;
    /* Pending debits count against the available credits (and pending
     * credits do not add to them). */
    if ((dr->flags & LEDGER_AF_DEBITS_MUST_NOT_EXCEED_CREDITS) && debits > nd.credits_posted)
        return LEDGER_TRANSFER_EXCEEDS_CREDITS;
    if ((cr->flags & LEDGER_AF_CREDITS_MUST_NOT_EXCEED_DEBITS) && credits > nc.debits_posted)
        return LEDGER_TRANSFER_EXCEEDS_DEBITS;

    int64_t expires_at_us = 0;
    if (pending && t->timeout_s > 0) {
        /* timeout_s <= LIMIT_TIMEOUT_S_MAX: about 3.2e13 us, far from
         * overflowing with any real clock. */
        int64_t timeout_us = (int64_t)t->timeout_s * 1000000;
        bool overflow = __builtin_add_overflow(b->next_ts, timeout_us, &expires_at_us);
        mrd_assert(!overflow);
    }

    /* All checks passed: apply. */
    undo_transfer_event(b, t);
    t->timestamp_us = b->next_ts++;
    account_change(b, dr, &nd);
    account_change(b, cr, &nc);
    if (pending) {
        ptrdiff_t e = id_index_insert(&b->pendings_ix, &t->id);
        mrd_assert(e >= 0);
        mrd_assert(b->pending_changes_n < b->pendings_ix.max);
        ledger_pending_state st = {.status = LEDGER_PENDING_PENDING,
                                   .expires_at_us = expires_at_us,
                                   .amount_posted = 0};
        size_t c = b->pending_changes_n++;
        b->pending_changes[c] =
            (ledger_pending_change){.pending_id = t->id, .state = st, .is_new = true};
        b->pendings[e] = (pending_entry){.t = t, .state = st, .change = (ptrdiff_t)c};
    }
    transfer_record(b, t);
    balance_row_add(b, dr, &t->id, t->timestamp_us);
    balance_row_add(b, cr, &t->id, t->timestamp_us);
    return LEDGER_TRANSFER_OK;
}

/* A post or void of a pending transfer. */
static ledger_transfer_result transfer_post_or_void(ledger_batch *b, ledger_transfer *t,
                                                    int64_t now_us)
{
    bool post = (t->flags & LEDGER_TF_POST_PENDING) != 0;
    pending_entry *pe = pending_find(b, &t->pending_id);
    if (pe == NULL) {
        /* A known transfer that is not two-phase (visible to the caller)
         * is "not pending"; anything else is not found. */
        const ledger_transfer *other = transfer_find(b, &t->pending_id);
        if (other != NULL && !(other->flags & LEDGER_TF_PENDING) &&
            account_find_scoped(b, &other->debit_account_id, t->customer_id) != NULL &&
            account_find_scoped(b, &other->credit_account_id, t->customer_id) != NULL)
            return LEDGER_TRANSFER_PENDING_TRANSFER_NOT_PENDING;
        return LEDGER_TRANSFER_PENDING_TRANSFER_NOT_FOUND;
    }
    const ledger_transfer *p = pe->t;
    ledger_account *dr = account_find_scoped(b, &p->debit_account_id, t->customer_id);
    ledger_account *cr = account_find_scoped(b, &p->credit_account_id, t->customer_id);
    if (dr == NULL || cr == NULL) {
        /* The store loads the accounts of every referenced pending, so
         * for the admin scope a miss is a store bug. */
        mrd_assert(t->customer_id > 0);
        return LEDGER_TRANSFER_PENDING_TRANSFER_NOT_FOUND;
    }
    if (!(p->flags & LEDGER_TF_PENDING))
        return LEDGER_TRANSFER_PENDING_TRANSFER_NOT_PENDING;
    if (!id128_is_zero(&t->debit_account_id) &&
        !id128_equal(&t->debit_account_id, &p->debit_account_id))
        return LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID;
    if (!id128_is_zero(&t->credit_account_id) &&
        !id128_equal(&t->credit_account_id, &p->credit_account_id))
        return LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID;
    if (t->ledger != 0 && t->ledger != p->ledger)
        return LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_LEDGER;
    if (t->code != 0 && t->code != p->code)
        return LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_CODE;
    if (post && t->amount > p->amount)
        return LEDGER_TRANSFER_EXCEEDS_PENDING_TRANSFER_AMOUNT;
    if (!post && t->amount != 0 && t->amount != p->amount)
        return LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT;
    switch (pe->state.status) {
    case LEDGER_PENDING_PENDING:
        break;
    case LEDGER_PENDING_POSTED:
        return LEDGER_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED;
    case LEDGER_PENDING_VOIDED:
        return LEDGER_TRANSFER_PENDING_TRANSFER_ALREADY_VOIDED;
    case LEDGER_PENDING_EXPIRED:
        return LEDGER_TRANSFER_PENDING_TRANSFER_EXPIRED;
    default:
        mrd_assert(!"unknown pending status");
    }
    if (pe->state.expires_at_us != 0 && now_us >= pe->state.expires_at_us)
        return LEDGER_TRANSFER_PENDING_TRANSFER_EXPIRED;
    if (post && (dr->flags & LEDGER_AF_CLOSED))
        return LEDGER_TRANSFER_DEBIT_ACCOUNT_CLOSED;
    if (post && (cr->flags & LEDGER_AF_CLOSED))
        return LEDGER_TRANSFER_CREDIT_ACCOUNT_CLOSED;

    mrd_assert(dr->ledger == p->ledger && cr->ledger == p->ledger);
    int64_t amount = post ? (t->amount == 0 ? p->amount : t->amount) : p->amount;
    balances nd = account_balances(dr);
    balances nc = account_balances(cr);
    /* The reservation is released in full; a post then adds what it
     * posts. */
    mrd_assert(nd.debits_pending >= p->amount && nc.credits_pending >= p->amount);
    nd.debits_pending -= p->amount;
    nc.credits_pending -= p->amount;
    if (post) {
        if (__builtin_add_overflow(nd.debits_posted, amount, &nd.debits_posted))
            return LEDGER_TRANSFER_OVERFLOWS_DEBITS_POSTED;
        if (__builtin_add_overflow(nc.credits_posted, amount, &nc.credits_posted))
            return LEDGER_TRANSFER_OVERFLOWS_CREDITS_POSTED;
    }

    undo_transfer_event(b, t);
    t->debit_account_id = p->debit_account_id;
    t->credit_account_id = p->credit_account_id;
    t->ledger = p->ledger;
    t->code = p->code;
    t->amount = amount;
    t->timestamp_us = b->next_ts++;
    account_change(b, dr, &nd);
    account_change(b, cr, &nc);
    ledger_pending_state st = pe->state;
    st.status = post ? LEDGER_PENDING_POSTED : LEDGER_PENDING_VOIDED;
    st.amount_posted = post ? amount : 0;
    pending_set_state(b, pe, &st);
    transfer_record(b, t);
    balance_row_add(b, dr, &t->id, t->timestamp_us);
    balance_row_add(b, cr, &t->id, t->timestamp_us);
    return LEDGER_TRANSFER_OK;
}

static int transfer_apply_one(ledger_batch *b, void *events, size_t i, int64_t now_us)
{
    ledger_transfer *t = &((ledger_transfer *)events)[i];
    ledger_transfer_result r = ledger_transfer_validate(t);
    if (r != LEDGER_TRANSFER_OK)
        return (int)r;
    r = transfer_exists(b, t);
    if (r != LEDGER_TRANSFER_OK)
        return (int)r;
    if (transfer_is_post_or_void(t))
        return (int)transfer_post_or_void(b, t, now_us);
    return (int)transfer_create(b, t);
}

static bool transfer_linked(const void *events, size_t i)
{
    return (((const ledger_transfer *)events)[i].flags & LEDGER_TF_LINKED) != 0;
}

static void transfer_set_result(void *results, size_t i, int code)
{
    mrd_assert(code >= 0 && code < LEDGER_TRANSFER_RESULT_COUNT);
    ((ledger_transfer_result *)results)[i] = (ledger_transfer_result)code;
}

/* ------------------------------------------------------------------ */
/* Accounts.                                                           */

static int account_apply_one(ledger_batch *b, void *events, size_t i, int64_t now_us)
{
    ledger_account *a = &((ledger_account *)events)[i];
    ledger_account_result r = ledger_account_validate(a);
    if (r != LEDGER_ACCOUNT_OK)
        return (int)r;
    ptrdiff_t e = id_index_find(&b->accounts_ix, &a->id);
    if (e >= 0)
        return ledger_account_same_fields(&b->accounts[e], a)
                   ? (int)LEDGER_ACCOUNT_EXISTS
                   : (int)LEDGER_ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS;
    if (!ledger_known(b, a->ledger))
        return (int)LEDGER_ACCOUNT_LEDGER_NOT_FOUND;

    undo_record *u = undo_push(b, UNDO_ACCOUNT_EVENT);
    u->u.aev.event = a;
    u->u.aev.old = account_balances(a);
    u->u.aev.timestamp_us = a->timestamp_us;
    a->debits_pending = 0;
    a->debits_posted = 0;
    a->credits_pending = 0;
    a->credits_posted = 0;
    a->timestamp_us = b->next_ts++;

    e = id_index_insert(&b->accounts_ix, &a->id);
    mrd_assert(e >= 0); /* 2*events_max added + events_max created */
    b->accounts[e] = *a;
    b->account_changed[e] = false;
    mrd_assert(b->new_accounts_n < b->events_max);
    b->new_accounts[b->new_accounts_n++] = a;
    return (int)LEDGER_ACCOUNT_OK;
}

static bool account_linked(const void *events, size_t i)
{
    return (((const ledger_account *)events)[i].flags & LEDGER_AF_LINKED) != 0;
}

static void account_set_result(void *results, size_t i, int code)
{
    mrd_assert(code >= 0 && code < LEDGER_ACCOUNT_RESULT_COUNT);
    ((ledger_account_result *)results)[i] = (ledger_account_result)code;
}

/* ------------------------------------------------------------------ */
/* Linked chains.                                                      */

typedef int (*apply_fn)(ledger_batch *b, void *events, size_t i, int64_t now_us);
typedef bool (*linked_fn)(const void *events, size_t i);
typedef void (*set_result_fn)(void *results, size_t i, int code);

static bool code_succeeds(int code)
{
    return code == CODE_OK || code == CODE_EXISTS;
}

static size_t apply_chains(ledger_batch *b, void *events, size_t count, int64_t now_us,
                           void *results, apply_fn apply, linked_fn linked,
                           set_result_fn set_result)
{
    mrd_assert(count <= b->events_max - b->events_used);
    b->events_used += count;
    b->delta_posted = 0;
    b->delta_pending = 0;
    if (b->next_ts < now_us)
        b->next_ts = now_us;

    size_t ok = 0;
    size_t i = 0;
    while (i < count) {
        size_t end = i;
        while (end < count && linked(events, end))
            end++;
        if (end == count) {
            for (size_t k = i; k < count; k++)
                set_result(results, k, CODE_LINKED_EVENT_CHAIN_OPEN);
            break;
        }
        /* The chain is events[i..end]; a lone event is a chain of one. */
        undo_mark m = undo_mark_take(b);
        size_t failed = SIZE_MAX;
        size_t chain_ok = 0;
        for (size_t k = i; k <= end; k++) {
            __int128 posted_before = b->delta_posted;
            __int128 pending_before = b->delta_pending;
            int code = apply(b, events, k, now_us);
            mrd_assert(b->delta_posted == posted_before && b->delta_pending == pending_before);
            set_result(results, k, code);
            if (!code_succeeds(code)) {
                failed = k;
                break;
            }
            if (code == CODE_OK)
                chain_ok++;
        }
        if (failed != SIZE_MAX) {
            undo_rollback(b, &m);
            for (size_t k = i; k <= end; k++)
                if (k != failed)
                    set_result(results, k, CODE_LINKED_EVENT_FAILED);
        } else {
            ok += chain_ok;
        }
        b->undo_n = 0;
        i = end + 1;
    }
    mrd_assert(b->delta_posted == 0 && b->delta_pending == 0);
    return ok;
}

size_t ledger_batch_apply_transfers(ledger_batch *b, ledger_transfer *events, size_t count,
                                    int64_t now_us, ledger_transfer_result *results)
{
    return apply_chains(b, events, count, now_us, results, transfer_apply_one,
                        transfer_linked, transfer_set_result);
}

size_t ledger_batch_apply_accounts(ledger_batch *b, ledger_account *events, size_t count,
                                   int64_t now_us, ledger_account_result *results)
{
    return apply_chains(b, events, count, now_us, results, account_apply_one, account_linked,
                        account_set_result);
}

/* ------------------------------------------------------------------ */
/* Expiry.                                                             */

/* Expire one pending transfer at now_us. Returns ok;
 * pending_transfer_not_found when the id is unknown to the batch;
 * pending_transfer_not_pending when it is not a pending transfer, not in
 * status PENDING (already posted/voided/expired), never expires, or is
 * not due yet. Changes nothing unless ok. */
ledger_transfer_result ledger_batch_expire(ledger_batch *b, const id128 *pending_id,
                                           int64_t now_us)
{
    pending_entry *pe = pending_find(b, pending_id);
    if (pe == NULL)
        return LEDGER_TRANSFER_PENDING_TRANSFER_NOT_FOUND;
    const ledger_transfer *p = pe->t;
    if (!(p->flags & LEDGER_TF_PENDING) || pe->state.status != LEDGER_PENDING_PENDING ||
        pe->state.expires_at_us == 0 || now_us < pe->state.expires_at_us)
        return LEDGER_TRANSFER_PENDING_TRANSFER_NOT_PENDING;
    ledger_account *dr = account_find_scoped(b, &p->debit_account_id, 0);
    ledger_account *cr = account_find_scoped(b, &p->credit_account_id, 0);
    mrd_assert(dr != NULL && cr != NULL); /* the store loads them */

    b->delta_posted = 0;
    b->delta_pending = 0;
    b->undo_n = 0;
    if (b->next_ts < now_us)
        b->next_ts = now_us;
    int64_t ts = b->next_ts++;

    balances nd = account_balances(dr);
    balances nc = account_balances(cr);
    mrd_assert(nd.debits_pending >= p->amount && nc.credits_pending >= p->amount);
    nd.debits_pending -= p->amount;
    nc.credits_pending -= p->amount;
    account_change(b, dr, &nd);
    account_change(b, cr, &nc);
    ledger_pending_state st = pe->state;
    st.status = LEDGER_PENDING_EXPIRED;
    pending_set_state(b, pe, &st);
    balance_row_add(b, dr, &p->id, ts);
    balance_row_add(b, cr, &p->id, ts);
    b->undo_n = 0; /* not undoable: an expiry is not part of a chain */
    mrd_assert(b->delta_posted == 0 && b->delta_pending == 0);
    return LEDGER_TRANSFER_OK;
}

/* ------------------------------------------------------------------ */
/* Outputs.                                                            */

size_t ledger_batch_new_transfers(const ledger_batch *b, const ledger_transfer *const **out)
{
    *out = b->new_transfers;
    return b->new_transfers_n;
}

size_t ledger_batch_new_accounts(const ledger_batch *b, const ledger_account *const **out)
{
    *out = b->new_accounts;
    return b->new_accounts_n;
}

static int account_ptr_compare(const void *x, const void *y)
{
    const ledger_account *a = *(const ledger_account *const *)x;
    const ledger_account *c = *(const ledger_account *const *)y;
    return id128_compare(&a->id, &c->id);
}

/* Sorted by id; the sort happens here, once per change of the list (the
 * view lives behind a pointer, so this stays a const accessor). Not
 * thread-safe, like everything on one batch. */
size_t ledger_batch_changed_accounts(const ledger_batch *b, const ledger_account *const **out)
{
    changed_view *v = b->view;
    if (!v->valid || v->generation != b->changed_generation) {
        if (b->changed_n > 0)
            memcpy(v->sorted, b->changed, b->changed_n * sizeof *v->sorted);
        qsort(v->sorted, b->changed_n, sizeof *v->sorted, account_ptr_compare);
        v->generation = b->changed_generation;
        v->valid = true;
    }
    *out = v->sorted;
    return b->changed_n;
}

size_t ledger_batch_pending_changes(const ledger_batch *b, const ledger_pending_change **out)
{
    *out = b->pending_changes;
    return b->pending_changes_n;
}

size_t ledger_batch_balance_rows(const ledger_batch *b, const ledger_balance_row **out)
{
    *out = b->balance_rows;
    return b->balance_rows_n;
}

/* Sum of debits minus credits (pending and posted) over the batch's
 * accounts of this ledger. Computed modulo 2^64 (unsigned arithmetic):
 * a batch holds only some of a ledger's accounts, so the true sum may
 * not fit, but equality before/after a change is still exact. */
int64_t ledger_batch_net_sum(const ledger_batch *b, int32_t ledger)
{
    uint64_t sum = 0;
    for (size_t e = 0; e < b->accounts_ix.count; e++) {
        const ledger_account *a = &b->accounts[e];
        if (a->ledger != ledger)
            continue;
        sum += (uint64_t)a->debits_pending + (uint64_t)a->debits_posted;
        sum -= (uint64_t)a->credits_pending + (uint64_t)a->credits_posted;
    }
    return (int64_t)sum;
}
