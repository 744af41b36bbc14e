/*
 * Keeps an existing System V segment attached (read-write) until standard
 * input ends, so that its attach count is 1 while a test looks at it.
 *
 * Usage: sysv_attach KEY    (KEY in decimal or 0x hex)
 *
 * Prints "attached SHMID" once attached. Then, for every line read from
 * standard input, prints the C string at the start of the segment, so a
 * test can see another process's writes through this live mapping. At end
 * of input it detaches and exits.
 */
#define _XOPEN_SOURCE 700
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s KEY\n", argv[0]);
        return 2;
    }
    key_t key = (key_t)strtoul(argv[1], NULL, 0);
    int id = shmget(key, 0, 0);
    if (id < 0) {
        perror("sysv_attach: shmget");
        return 1;
    }
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds) < 0) {
        perror("sysv_attach: shmctl(IPC_STAT)");
        return 1;
    }
    volatile const char *mem = shmat(id, NULL, 0);
    if (mem == (volatile const char *)-1) {
        perror("sysv_attach: shmat");
        return 1;
    }
    printf("attached %d\n", id);
    fflush(stdout);

    char line[256];
    while (fgets(line, sizeof line, stdin) != NULL) {
        size_t i = 0;
        while (i < ds.shm_segsz && mem[i] != '\0') {
            putchar(mem[i]);
            i++;
        }
        putchar('\n');
        fflush(stdout);
    }
    if (shmdt((const void *)mem) < 0) {
        perror("sysv_attach: shmdt");
        return 1;
    }
    return 0;
}
