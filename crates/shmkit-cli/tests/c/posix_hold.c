/*
 * Keeps an existing POSIX shared-memory object mapped (read-only) until
 * standard input ends, so that a test can see a live process using it (in
 * /proc/PID/maps) while it looks at the object.
 *
 * Usage: posix_hold /NAME
 *
 * Prints "mapped SIZE" once mapped (the descriptor is closed then: only the
 * mapping keeps the object in use). At end of input it unmaps and exits.
 */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s /NAME\n", argv[0]);
        return 2;
    }
    int fd = shm_open(argv[1], O_RDONLY, 0);
    if (fd < 0) {
        perror("posix_hold: shm_open");
        return 1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        perror("posix_hold: fstat");
        return 1;
    }
    if (st.st_size <= 0) {
        fprintf(stderr, "posix_hold: the object is empty\n");
        return 1;
    }
    size_t size = (size_t)st.st_size;
    void *mem = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) {
        perror("posix_hold: mmap");
        return 1;
    }
    close(fd);
    printf("mapped %zu\n", size);
    fflush(stdout);

    char line[256];
    while (fgets(line, sizeof line, stdin) != NULL) {
    }
    if (munmap(mem, size) < 0) {
        perror("posix_hold: munmap");
        return 1;
    }
    return 0;
}
