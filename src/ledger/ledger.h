/*
 * ledger.h — the ledger's data model and the rules engine's interface.
 *
 * The model is TigerBeetle's: accounts hold four signed 64-bit balances
 * (debits/credits x pending/posted) in minor units; transfers move an
 * amount from a debit account to a credit account of the same ledger;
 * two-phase transfers reserve (pending) and later post, partially post,
 * void or expire; linked events succeed or fail as one chain. Every event
 * gets its own result code.
 *
 * This header is pure data and pure logic: no I/O. The store
 * (ledger/store.c) loads and locks the rows a batch touches into a
 * ledger_batch, the engine (ledger/engine.c) applies the rules in C,
 * and the store writes back what the engine changed, in one PostgreSQL
 * transaction. Keeping the rules free of I/O is what lets the unit tests
 * drive them directly and lets one commit carry many requests.
 */
#ifndef MERIDIAN_LEDGER_H
#define MERIDIAN_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/id128.h"

/* ---- Account flags (bit values are part of the API and the schema). */
enum {
    LEDGER_AF_LINKED = 1u << 0,
    LEDGER_AF_DEBITS_MUST_NOT_EXCEED_CREDITS = 1u << 1,
    LEDGER_AF_CREDITS_MUST_NOT_EXCEED_DEBITS = 1u << 2,
    LEDGER_AF_HISTORY = 1u << 3,
    LEDGER_AF_CLOSED = 1u << 4,
};
#define LEDGER_AF_ALL 0x1fu

/* ---- Transfer flags. */
enum {
    LEDGER_TF_LINKED = 1u << 0,
    LEDGER_TF_PENDING = 1u << 1,
    LEDGER_TF_POST_PENDING = 1u << 2,
    LEDGER_TF_VOID_PENDING = 1u << 3,
};
#define LEDGER_TF_ALL 0x0fu

/* ---- Status of a pending (two-phase) transfer. */
typedef enum {
    LEDGER_PENDING_PENDING = 1,
    LEDGER_PENDING_POSTED = 2,
    LEDGER_PENDING_VOIDED = 3,
    LEDGER_PENDING_EXPIRED = 4,
} ledger_pending_status;

typedef struct ledger_account {
    id128 id;
    int64_t customer_id; /* owner; > 0 */
    int32_t ledger;      /* > 0, references the ledgers table (currency) */
    int32_t code;        /* user-defined account type, >= 0 */
    uint32_t flags;      /* LEDGER_AF_* */
    int64_t debits_pending;
    int64_t debits_posted;
    int64_t credits_pending;
    int64_t credits_posted;
    id128 user_data_128;
    int64_t user_data_64;
    int32_t user_data_32;
    int64_t timestamp_us; /* creation time, set by the store */
} ledger_account;

typedef struct ledger_transfer {
    id128 id;
    id128 debit_account_id;
    id128 credit_account_id;
    id128 pending_id;   /* post/void: the pending transfer; else zero */
    int64_t amount;     /* minor units; post: 0 means the full pending amount */
    int32_t ledger;     /* post/void: 0 means take the pending's */
    int32_t code;       /* post/void: 0 means take the pending's */
    uint32_t flags;     /* LEDGER_TF_* */
    uint32_t timeout_s; /* pending only: 0 = never expires */
    id128 user_data_128;
    int64_t user_data_64;
    int32_t user_data_32;
    /* Canonical JSON (compact, sorted keys) or NULL; not owned here:
     * it lives as long as the request that carries it. */
    const char *metadata;
    size_t metadata_len;
    int64_t customer_id;  /* who asked: > 0 a customer, 0 the admin scope */
    int64_t timestamp_us; /* set by the engine when the event is applied */
    /* Delivery, not a field of the transfer (never stored or compared):
     * acknowledge only once a cross-region standby has flushed it. */
    bool durability_global;
} ledger_transfer;

/* State of a pending transfer, kept beside the immutable transfer row. */
typedef struct ledger_pending_state {
    ledger_pending_status status;
    int64_t expires_at_us; /* 0 = never */
    int64_t amount_posted; /* set when posted */
} ledger_pending_state;

/* ---- Result codes. The names (ledger_*_result_name) are the stable
 * strings of the HTTP API; add new codes at the end only. */
typedef enum {
    LEDGER_ACCOUNT_OK = 0,
    LEDGER_ACCOUNT_EXISTS,
    LEDGER_ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS,
    LEDGER_ACCOUNT_LINKED_EVENT_FAILED,
    LEDGER_ACCOUNT_LINKED_EVENT_CHAIN_OPEN,
    LEDGER_ACCOUNT_ID_MUST_NOT_BE_ZERO,
    LEDGER_ACCOUNT_FLAGS_ARE_MUTUALLY_EXCLUSIVE,
    LEDGER_ACCOUNT_FLAGS_UNKNOWN,
    LEDGER_ACCOUNT_LEDGER_MUST_NOT_BE_ZERO,
    LEDGER_ACCOUNT_LEDGER_NOT_FOUND,
    LEDGER_ACCOUNT_CUSTOMER_NOT_FOUND,
    LEDGER_ACCOUNT_RESULT_COUNT
} ledger_account_result;

typedef enum {
    LEDGER_TRANSFER_OK = 0,
    LEDGER_TRANSFER_EXISTS,
    LEDGER_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS,
    LEDGER_TRANSFER_LINKED_EVENT_FAILED,
    LEDGER_TRANSFER_LINKED_EVENT_CHAIN_OPEN,
    LEDGER_TRANSFER_ID_MUST_NOT_BE_ZERO,
    LEDGER_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE,
    LEDGER_TRANSFER_FLAGS_UNKNOWN,
    LEDGER_TRANSFER_DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO,
    LEDGER_TRANSFER_CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO,
    LEDGER_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT,
    LEDGER_TRANSFER_PENDING_ID_MUST_BE_ZERO,
    LEDGER_TRANSFER_PENDING_ID_MUST_NOT_BE_ZERO,
    LEDGER_TRANSFER_PENDING_ID_MUST_BE_DIFFERENT,
    LEDGER_TRANSFER_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER,
    LEDGER_TRANSFER_TIMEOUT_TOO_LARGE,
    LEDGER_TRANSFER_AMOUNT_MUST_BE_POSITIVE,
    LEDGER_TRANSFER_LEDGER_MUST_NOT_BE_ZERO,
    LEDGER_TRANSFER_DEBIT_ACCOUNT_NOT_FOUND,
    LEDGER_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND,
    LEDGER_TRANSFER_ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER,
    LEDGER_TRANSFER_TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS,
    LEDGER_TRANSFER_DEBIT_ACCOUNT_CLOSED,
    LEDGER_TRANSFER_CREDIT_ACCOUNT_CLOSED,
    LEDGER_TRANSFER_PENDING_TRANSFER_NOT_FOUND,
    LEDGER_TRANSFER_PENDING_TRANSFER_NOT_PENDING,
    LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID,
    LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID,
    LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_LEDGER,
    LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_CODE,
    LEDGER_TRANSFER_EXCEEDS_PENDING_TRANSFER_AMOUNT,
    LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT,
    LEDGER_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED,
    LEDGER_TRANSFER_PENDING_TRANSFER_ALREADY_VOIDED,
    LEDGER_TRANSFER_PENDING_TRANSFER_EXPIRED,
    LEDGER_TRANSFER_OVERFLOWS_DEBITS_PENDING,
    LEDGER_TRANSFER_OVERFLOWS_CREDITS_PENDING,
    LEDGER_TRANSFER_OVERFLOWS_DEBITS_POSTED,
    LEDGER_TRANSFER_OVERFLOWS_CREDITS_POSTED,
    LEDGER_TRANSFER_OVERFLOWS_DEBITS,
    LEDGER_TRANSFER_OVERFLOWS_CREDITS,
    LEDGER_TRANSFER_EXCEEDS_CREDITS,
    LEDGER_TRANSFER_EXCEEDS_DEBITS,
    LEDGER_TRANSFER_RESULT_COUNT
} ledger_transfer_result;

/* Stable snake_case names ("ok", "exists", "exceeds_credits", ...). */
const char *ledger_account_result_name(ledger_account_result r);
const char *ledger_transfer_result_name(ledger_transfer_result r);

/* ---- Stateless validation (no lookups): the checks that depend only on
 * the event itself. Returns LEDGER_*_OK or the first rule broken, in the
 * order the enum lists them. */
ledger_account_result ledger_account_validate(const ledger_account *a);
ledger_transfer_result ledger_transfer_validate(const ledger_transfer *t);

/* True when two accounts / transfers carry the same user-supplied fields
 * (what idempotency compares: not balances, not timestamps). */
bool ledger_account_same_fields(const ledger_account *a, const ledger_account *b);
bool ledger_transfer_same_fields(const ledger_transfer *stored,
                                 const ledger_transfer *request);

/* ---- The batch: everything one commit reads and writes.
 *
 * Lifecycle: ledger_batch_create once per worker; per commit:
 * ledger_batch_reset, then the store adds the rows it loaded (accounts
 * locked FOR UPDATE in id order, existing transfers with the requested
 * ids, pending transfers referenced by post/void events and their
 * state), then ledger_batch_apply_transfers is called once per request
 * (linked chains never cross requests), then the store reads the
 * outputs and writes them. Sizes are bounded by events_max given at
 * creation; adding past them returns -1 (the batcher never does). */
typedef struct ledger_batch ledger_batch;

/* Returns NULL on allocation failure. events_max bounds events per
 * commit; the batch holds up to 2*events_max accounts and events_max
 * existing transfers and pending transfers each. */
ledger_batch *ledger_batch_create(size_t events_max);
void ledger_batch_free(ledger_batch *b);
void ledger_batch_reset(ledger_batch *b);

/* Add rows loaded by the store. The batch copies them (metadata pointers
 * are copied as pointers: the caller keeps them alive until reset).
 * Return 0, or -1 when a bound is exceeded. Adding the same id twice
 * keeps the first. */
int ledger_batch_add_account(ledger_batch *b, const ledger_account *a);
int ledger_batch_add_transfer(ledger_batch *b, const ledger_transfer *t);
int ledger_batch_add_pending(ledger_batch *b, const ledger_transfer *pending,
                             const ledger_pending_state *state);

/* Apply count events of one request in order, at time now_us (a
 * monotonic wall clock in microseconds; timestamps given to applied
 * transfers are now_us, now_us+1, ... and strictly increase across calls
 * on the same batch). results[i] receives the code of events[i]; events
 * that are ok have their timestamp_us, and for post/void their resolved
 * debit/credit/ledger/code/amount, filled in. Events applied earlier in
 * the same batch are visible to later ones (a pending created then
 * posted in one batch works; a repeated id gets exists). A failing event
 * inside a linked chain undoes the whole chain. Returns the number of ok
 * events. */
size_t ledger_batch_apply_transfers(ledger_batch *b, ledger_transfer *events,
                                    size_t count, int64_t now_us,
                                    ledger_transfer_result *results);

/* Known ledgers (from the ledgers table), for account creation. */
int ledger_batch_add_ledger(ledger_batch *b, int32_t ledger);

/* Apply count account events of one request: the same contract as
 * ledger_batch_apply_transfers (results per event, linked chains, ids
 * already stored or created earlier in the batch give exists or
 * exists_with_different_fields). Accounts to create must have been
 * checked for existence by adding the stored ones first. Returns the
 * number of ok events. */
size_t ledger_batch_apply_accounts(ledger_batch *b, ledger_account *events,
                                   size_t count, int64_t now_us,
                                   ledger_account_result *results);

/* Accounts created (ok), in order; pointers into the callers' arrays. */
size_t ledger_batch_new_accounts(const ledger_batch *b,
                                 const ledger_account *const **out);

/* Expire the pending transfer pending_id (added with
 * ledger_batch_add_pending) at now_us: releases its pending amounts and
 * sets its status EXPIRED. Returns LEDGER_TRANSFER_OK, or
 * PENDING_TRANSFER_NOT_FOUND / NOT_PENDING / a not-yet-expired
 * PENDING_TRANSFER_NOT_PENDING... see engine.c. */
ledger_transfer_result ledger_batch_expire(ledger_batch *b, const id128 *pending_id,
                                           int64_t now_us);

/* ---- Outputs, valid until the next reset. */

/* Transfers applied (ok), in application order. Pointers into the
 * caller's events arrays. */
size_t ledger_batch_new_transfers(const ledger_batch *b,
                                  const ledger_transfer *const **out);

/* Accounts whose balances changed, sorted by id, with their new
 * balances. */
size_t ledger_batch_changed_accounts(const ledger_batch *b,
                                     const ledger_account *const **out);

/* Pending states created or changed (new pending transfers, posts,
 * voids, expiries). */
typedef struct ledger_pending_change {
    id128 pending_id;
    ledger_pending_state state;
    bool is_new; /* insert rather than update */
} ledger_pending_change;
size_t ledger_batch_pending_changes(const ledger_batch *b,
                                    const ledger_pending_change **out);

/* Balance history rows: one per applied transfer per side whose account
 * has LEDGER_AF_HISTORY, with the balances right after that transfer. */
typedef struct ledger_balance_row {
    id128 account_id;
    id128 transfer_id;
    int64_t timestamp_us;
    int64_t debits_pending;
    int64_t debits_posted;
    int64_t credits_pending;
    int64_t credits_posted;
} ledger_balance_row;
size_t ledger_batch_balance_rows(const ledger_batch *b,
                                 const ledger_balance_row **out);

/* Per-ledger sum of (debits - credits) over the batch's accounts, for
 * the money invariant asserted around every commit: the engine asserts
 * that applying a batch leaves this sum unchanged for every ledger. */
int64_t ledger_batch_net_sum(const ledger_batch *b, int32_t ledger);

#endif
