/*
 * Creates a System V semaphore set and a System V message queue, puts
 * messages in the queue, and exits (both objects stay until removed).
 *
 * Usage: sysv_sem_msg SEMKEY NSEMS MSGKEY COUNT SIZE
 *
 * The semaphore set gets NSEMS semaphores and mode 0640, the queue mode
 * 0600 and COUNT messages of SIZE bytes each. Keys are decimal or 0x hex.
 * Prints "semid ID" and "msqid ID".
 */
#define _XOPEN_SOURCE 700
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>

struct message {
    long mtype;
    char mtext[4096];
};

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s SEMKEY NSEMS MSGKEY COUNT SIZE\n", argv[0]);
        return 2;
    }
    key_t semkey = (key_t)strtoul(argv[1], NULL, 0);
    int nsems = atoi(argv[2]);
    key_t msgkey = (key_t)strtoul(argv[3], NULL, 0);
    int count = atoi(argv[4]);
    size_t size = (size_t)strtoul(argv[5], NULL, 0);
    if (nsems < 1 || count < 0 || size > sizeof(((struct message *)0)->mtext)) {
        fprintf(stderr, "sysv_sem_msg: bad arguments\n");
        return 2;
    }
    int semid = semget(semkey, nsems, IPC_CREAT | IPC_EXCL | 0640);
    if (semid < 0) {
        perror("sysv_sem_msg: semget");
        return 1;
    }
    int msqid = msgget(msgkey, IPC_CREAT | IPC_EXCL | 0600);
    if (msqid < 0) {
        perror("sysv_sem_msg: msgget");
        return 1;
    }
    static struct message m;
    m.mtype = 1;
    memset(m.mtext, 'm', size);
    for (int i = 0; i < count; i++) {
        if (msgsnd(msqid, &m, size, IPC_NOWAIT) < 0) {
            perror("sysv_sem_msg: msgsnd");
            return 1;
        }
    }
    printf("semid %d\nmsqid %d\n", semid, msqid);
    return 0;
}
