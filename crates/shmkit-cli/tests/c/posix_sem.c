/*
 * Creates a POSIX named semaphore (mode 0640, value 1) and exits; it stays
 * in /dev/shm as sem.NAME until sem_unlink.
 *
 * Usage: posix_sem /NAME
 */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <semaphore.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s /NAME\n", argv[0]);
        return 2;
    }
    sem_t *sem = sem_open(argv[1], O_CREAT | O_EXCL, 0640, 1);
    if (sem == SEM_FAILED) {
        perror("posix_sem: sem_open");
        return 1;
    }
    sem_close(sem);
    return 0;
}
