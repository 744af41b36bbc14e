/*
 * Adds 1 to a 64-bit counter at offset 0 of a System V shared-memory
 * segment N times, each time under a System V semaphore used as a lock
 * (semop -1 / +1 on semaphore 0, with SEM_UNDO), the way C programs do it.
 * Both objects must exist already (the Rust test creates them).
 *
 * usage: sysv_sem_counter SEMKEY SHMKEY N    (keys: decimal or 0x hex)
 *
 * Prints "ready" once attached (so the caller can start counting at the
 * same time), then "done".
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

static int change(int semid, short delta) {
    struct sembuf op = {.sem_num = 0, .sem_op = delta, .sem_flg = SEM_UNDO};
    while (semop(semid, &op, 1) == -1) {
        if (errno != EINTR) {
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s SEMKEY SHMKEY N\n", argv[0]);
        return 2;
    }
    alarm(60); /* never outlive a test that died */
    key_t semkey = (key_t)strtoul(argv[1], NULL, 0);
    key_t shmkey = (key_t)strtoul(argv[2], NULL, 0);
    long n = strtol(argv[3], NULL, 0);

    int semid = semget(semkey, 0, 0);
    if (semid == -1) {
        perror("semget");
        return 1;
    }
    int shmid = shmget(shmkey, 0, 0);
    if (shmid == -1) {
        perror("shmget");
        return 1;
    }
    struct shmid_ds ds;
    if (shmctl(shmid, IPC_STAT, &ds) == -1) {
        perror("shmctl(IPC_STAT)");
        return 1;
    }
    if (ds.shm_segsz < sizeof(uint64_t)) {
        fprintf(stderr, "the segment has %zu bytes, fewer than a counter\n", (size_t)ds.shm_segsz);
        return 1;
    }
    void *addr = shmat(shmid, NULL, 0);
    if (addr == (void *)-1) {
        perror("shmat");
        return 1;
    }
    volatile uint64_t *counter = addr;
    printf("ready\n");
    fflush(stdout);

    for (long i = 0; i < n; i++) {
        if (change(semid, -1) == -1) {
            perror("semop(-1)");
            return 1;
        }
        *counter = *counter + 1;
        if (change(semid, 1) == -1) {
            perror("semop(+1)");
            return 1;
        }
    }
    if (shmdt(addr) == -1) {
        perror("shmdt");
        return 1;
    }
    printf("done\n");
    return 0;
}
