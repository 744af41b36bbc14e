/*
 * Takes semaphore 0 of a System V set as a lock (semop -1 with SEM_UNDO),
 * prints "locked", and waits to be killed while holding it.
 *
 * usage: sysv_sem_hold SEMKEY    (decimal or 0x hex)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SEMKEY\n", argv[0]);
        return 2;
    }
    alarm(60); /* never outlive a test that died */
    key_t key = (key_t)strtoul(argv[1], NULL, 0);
    int semid = semget(key, 0, 0);
    if (semid == -1) {
        perror("semget");
        return 1;
    }
    struct sembuf op = {.sem_num = 0, .sem_op = -1, .sem_flg = SEM_UNDO};
    while (semop(semid, &op, 1) == -1) {
        if (errno != EINTR) {
            perror("semop(-1)");
            return 1;
        }
    }
    printf("locked\n");
    fflush(stdout);
    for (;;) {
        pause();
    }
}
