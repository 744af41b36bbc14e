/*
 * Opens an existing POSIX named semaphore and posts it COUNT times.
 *
 * usage: psem_post NAME COUNT    (NAME with its leading slash)
 */
#include <fcntl.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s NAME COUNT\n", argv[0]);
        return 2;
    }
    alarm(60); /* never outlive a test that died */
    long count = strtol(argv[2], NULL, 0);
    sem_t *sem = sem_open(argv[1], 0);
    if (sem == SEM_FAILED) {
        perror("sem_open");
        return 1;
    }
    for (long i = 0; i < count; i++) {
        if (sem_post(sem) == -1) {
            perror("sem_post");
            return 1;
        }
    }
    if (sem_close(sem) == -1) {
        perror("sem_close");
        return 1;
    }
    printf("posted %ld\n", count);
    return 0;
}
