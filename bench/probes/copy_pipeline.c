/*
 * The best a copy-in, copy-out stream of 1 MiB messages can do between two
 * cores, without any channel around it: a producer process copies each
 * message into a shared buffer of SLOTS messages, a consumer copies it out,
 * and one atomic index each way says how far each got. Prints the stream's
 * bandwidth next to single-thread memcpy of 1 MiB (as `shmkit bench`
 * measures it), so the ring's "x memcpy" at 1 MiB can be judged against
 * what the machine allows.
 *
 *   cc -O2 -o copy_pipeline bench/probes/copy_pipeline.c && ./copy_pipeline 8 3000
 *
 * Arguments: slots (default 8: the bench ring holds 8 MiB at 1 MiB), messages.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG (1 << 20)

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    long slots = argc > 1 ? atol(argv[1]) : 8;
    long n = argc > 2 ? atol(argv[2]) : 2000;
    size_t len = (size_t)slots * MSG + 4096;
    char *ring = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (ring == MAP_FAILED || slots < 1 || n < 2) {
        perror("copy_pipeline");
        return 1;
    }
    _Atomic long *tail = (_Atomic long *)(ring + (size_t)slots * MSG);
    _Atomic long *head = tail + 16; /* another cache line */
    memset(ring, 0, (size_t)slots * MSG);
    char *src = malloc(MSG), *dst = malloc(MSG);
    memset(src, 1, MSG);
    memset(dst, 0, MSG);

    double t0 = now();
    for (int i = 0; i < 200; i++) {
        memcpy(dst, src, MSG);
        __asm__ volatile("" ::"r"(dst) : "memory");
    }
    double memcpy_bps = 200.0 * MSG / (now() - t0);

    pid_t child = fork();
    if (child == 0) {
        pin(1);
        for (long i = 0; i < n; i++) {
            while (i - atomic_load_explicit(head, memory_order_acquire) >= slots)
                ;
            memcpy(ring + (i % slots) * (size_t)MSG, src, MSG);
            atomic_store_explicit(tail, i + 1, memory_order_release);
        }
        _exit(0);
    }
    pin(0);
    double start = 0;
    for (long i = 0; i < n; i++) {
        while (atomic_load_explicit(tail, memory_order_acquire) <= i)
            ;
        if (i == 0)
            start = now();
        memcpy(dst, ring + (i % slots) * (size_t)MSG, MSG);
        atomic_store_explicit(head, i + 1, memory_order_release);
    }
    double secs = now() - start;
    waitpid(child, NULL, 0);
    double bps = (n - 1.0) * MSG / secs;
    printf("%ld slots: stream %.2f GB/s, memcpy %.2f GB/s, ratio %.2f\n", slots, bps / 1e9, memcpy_bps / 1e9,
           bps / memcpy_bps);
    return 0;
}
