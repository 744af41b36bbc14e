/*
 * The classic System V reader: finds an existing segment with
 * shmget(key, 0, 0), attaches it read-only and prints the C string at its
 * start (never reading past the segment's end).
 *
 * Usage: sysv_reader KEY    (KEY in decimal or 0x hex)
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
        perror("sysv_reader: shmget");
        return 1;
    }
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds) < 0) {
        perror("sysv_reader: shmctl(IPC_STAT)");
        return 1;
    }
    const char *mem = shmat(id, NULL, SHM_RDONLY);
    if (mem == (const char *)-1) {
        perror("sysv_reader: shmat");
        return 1;
    }
    size_t len = strnlen(mem, ds.shm_segsz);
    printf("%.*s\n", (int)len, mem);
    if (shmdt(mem) < 0) {
        perror("sysv_reader: shmdt");
        return 1;
    }
    return 0;
}
