/*
 * The classic POSIX writer: shm_open(O_CREAT | O_EXCL | O_RDWR, 0600),
 * ftruncate to 4096 bytes, mmap, copy a message in, unmap and exit. The
 * object stays in /dev/shm until someone removes it.
 *
 * Usage: posix_writer /NAME MESSAGE
 */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIZE 4096

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s /NAME MESSAGE\n", argv[0]);
        return 2;
    }
    if (strlen(argv[2]) >= SIZE) {
        fprintf(stderr, "posix_writer: message too long\n");
        return 2;
    }
    int fd = shm_open(argv[1], O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) {
        perror("posix_writer: shm_open");
        return 1;
    }
    if (ftruncate(fd, SIZE) < 0) {
        perror("posix_writer: ftruncate");
        return 1;
    }
    char *mem = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) {
        perror("posix_writer: mmap");
        return 1;
    }
    strcpy(mem, argv[2]);
    if (munmap(mem, SIZE) < 0) {
        perror("posix_writer: munmap");
        return 1;
    }
    close(fd);
    return 0;
}
