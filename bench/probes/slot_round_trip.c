/*
 * The best a zero-copy publish/subscribe round trip can do between two
 * cores, with none of shmkit's checks around it: each direction is a ring of
 * 16 slots (sequence word and payload in the slot, as in shmkit's pub/sub);
 * the sender copies the message into the next slot, stores the sequence
 * word, and asks for the next slot's lines (as shmkit's publisher does); the
 * receiver spins on the sequence word and reads the first 8 bytes (as the
 * bench's receivers and iceoryx2's do). Round trips are timed one by one with
 * CLOCK_MONOTONIC and the median is printed next to the cache-line round
 * trip between the same two cores, measured the same way, so `shmkit bench`'s
 * pub/sub rows and its "x iceoryx2" ratio can be judged against what the
 * machine allows.
 *
 *   cc -O2 -o slot_round_trip bench/probes/slot_round_trip.c && ./slot_round_trip
 *
 * Arguments: message sizes in bytes (default 8 4096).
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 16
#define ROUNDS 200000
#define HEADER 16 /* sequence word, length */

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int by_value(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t median(uint64_t *v, long n) {
    qsort(v, (size_t)n, sizeof *v, by_value);
    return v[n / 2];
}

static void *shared(size_t len) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    memset(p, 0, len);
    return p;
}

/* One direction: SLOTS slots of `stride` bytes. */
struct ring {
    char *base;
    size_t size, stride;
};

static char *slot(const struct ring *r, long n) { return r->base + (size_t)(n % SLOTS) * r->stride; }

static void send(const struct ring *r, long n, const char *src) {
    char *s = slot(r, n);
    memcpy(s + HEADER, src, r->size);
    atomic_store_explicit((_Atomic uint64_t *)(s + 8), r->size, memory_order_relaxed);
    atomic_store_explicit((_Atomic uint64_t *)s, (uint64_t)n + 1, memory_order_release);
    /* The rest of the next slot, as shmkit's publisher asks for it. */
    char *next = slot(r, n + 1);
    for (size_t at = 64; at < HEADER + r->size; at += 64)
        __builtin_prefetch(next + at, 1, 3);
}

static void receive(const struct ring *r, long n, char *head) {
    char *s = slot(r, n);
    while (atomic_load_explicit((_Atomic uint64_t *)s, memory_order_acquire) != (uint64_t)n + 1)
        __builtin_ia32_pause();
    memcpy(head, s + HEADER, 8);
}

static uint64_t slot_round_trip(size_t size) {
    size_t stride = (HEADER + size + 63) / 64 * 64;
    size_t half = (SLOTS * stride + 4095) / 4096 * 4096;
    char *m = shared(2 * half);
    struct ring ping = {m, size, stride}, pong = {m + half, size, stride};
    char *msg = malloc(size < 8 ? 8 : size);
    memset(msg, 0x5a, size);
    pid_t child = fork();
    if (child == 0) {
        pin(1);
        char head[8];
        for (long i = 0; i < ROUNDS; i++) {
            receive(&ping, i, head);
            send(&pong, i, msg);
        }
        _exit(0);
    }
    pin(0);
    uint64_t *t = malloc(ROUNDS * sizeof *t);
    char head[8];
    for (long i = 0; i < ROUNDS; i++) {
        uint64_t start = now_ns();
        send(&ping, i, msg);
        receive(&pong, i, head);
        t[i] = now_ns() - start;
    }
    waitpid(child, NULL, 0);
    uint64_t result = median(t + ROUNDS / 10, ROUNDS - ROUNDS / 10);
    free(t);
    free(msg);
    munmap(m, 2 * half);
    return result;
}

static uint64_t cache_line_round_trip(void) {
    char *m = shared(4096);
    _Atomic uint64_t *ping = (_Atomic uint64_t *)m, *pong = (_Atomic uint64_t *)(m + 128);
    pid_t child = fork();
    if (child == 0) {
        pin(1);
        for (uint64_t i = 1; i <= ROUNDS; i++) {
            while (atomic_load_explicit(ping, memory_order_acquire) != i)
                __builtin_ia32_pause();
            atomic_store_explicit(pong, i, memory_order_release);
        }
        _exit(0);
    }
    pin(0);
    uint64_t *t = malloc(ROUNDS * sizeof *t);
    for (uint64_t i = 1; i <= ROUNDS; i++) {
        uint64_t start = now_ns();
        atomic_store_explicit(ping, i, memory_order_release);
        while (atomic_load_explicit(pong, memory_order_acquire) != i)
            __builtin_ia32_pause();
        t[i - 1] = now_ns() - start;
    }
    waitpid(child, NULL, 0);
    uint64_t result = median(t + ROUNDS / 10, ROUNDS - ROUNDS / 10);
    free(t);
    munmap(m, 4096);
    return result;
}

int main(int argc, char **argv) {
    printf("cache-line round trip %lu ns\n", (unsigned long)cache_line_round_trip());
    static const char *defaults[] = {"8", "4096"};
    int n = argc > 1 ? argc - 1 : 2;
    for (int i = 0; i < n; i++) {
        long size = atol(argc > 1 ? argv[i + 1] : defaults[i]);
        if (size < 8 || size > (1 << 24)) {
            fprintf(stderr, "slot_round_trip: sizes from 8 bytes to 16 MiB\n");
            return 2;
        }
        printf("%7ld B slot round trip %lu ns\n", size, (unsigned long)slot_round_trip((size_t)size));
    }
    return 0;
}
