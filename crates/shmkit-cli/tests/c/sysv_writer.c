/*
 * The classic System V writer: creates a 4096-byte segment with
 * shmget(key, 4096, IPC_CREAT | 0600), copies a message into it, detaches
 * and exits. The segment stays until someone removes it.
 *
 * Usage: sysv_writer KEY MESSAGE    (KEY in decimal or 0x hex)
 * Prints the shmid on standard output.
 */
#define _XOPEN_SOURCE 700
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>

#define SIZE 4096

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s KEY MESSAGE\n", argv[0]);
        return 2;
    }
    key_t key = (key_t)strtoul(argv[1], NULL, 0);
    if (strlen(argv[2]) >= SIZE) {
        fprintf(stderr, "sysv_writer: message too long\n");
        return 2;
    }
    int id = shmget(key, SIZE, IPC_CREAT | 0600);
    if (id < 0) {
        perror("sysv_writer: shmget");
        return 1;
    }
    char *mem = shmat(id, NULL, 0);
    if (mem == (char *)-1) {
        perror("sysv_writer: shmat");
        return 1;
    }
    strcpy(mem, argv[2]);
    if (shmdt(mem) < 0) {
        perror("sysv_writer: shmdt");
        return 1;
    }
    printf("%d\n", id);
    return 0;
}
