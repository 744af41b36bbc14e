/*
 * Creates a POSIX named semaphore (O_CREAT | O_EXCL, mode 0600) with VALUE
 * and prints "created"; after a line on stdin (the caller has taken the
 * units), waits on it once (sem_wait) and prints "woken". The name is left
 * for the caller to remove.
 *
 * usage: psem_create NAME VALUE    (NAME with its leading slash)
 */
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s NAME VALUE\n", argv[0]);
        return 2;
    }
    alarm(60); /* never outlive a test that died */
    unsigned value = (unsigned)strtoul(argv[2], NULL, 0);
    sem_t *sem = sem_open(argv[1], O_CREAT | O_EXCL, S_IRUSR | S_IWUSR, value);
    if (sem == SEM_FAILED) {
        perror("sem_open");
        return 1;
    }
    printf("created\n");
    fflush(stdout);
    char line[64];
    if (fgets(line, sizeof line, stdin) == NULL) {
        fprintf(stderr, "stdin closed before the go-ahead\n");
        return 1;
    }
    while (sem_wait(sem) == -1) {
        if (errno != EINTR) {
            perror("sem_wait");
            return 1;
        }
    }
    printf("woken\n");
    if (sem_close(sem) == -1) {
        perror("sem_close");
        return 1;
    }
    return 0;
}
