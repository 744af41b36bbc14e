/*
 * The classic POSIX reader: shm_open(O_RDONLY), fstat for the size, mmap
 * read-only, and print the C string at the start (never reading past the
 * object's end).
 *
 * Usage: posix_reader /NAME
 */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
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
        perror("posix_reader: shm_open");
        return 1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        perror("posix_reader: fstat");
        return 1;
    }
    if (st.st_size <= 0) {
        fprintf(stderr, "posix_reader: the object is empty\n");
        return 1;
    }
    size_t size = (size_t)st.st_size;
    const char *mem = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) {
        perror("posix_reader: mmap");
        return 1;
    }
    size_t len = strnlen(mem, size);
    printf("%.*s\n", (int)len, mem);
    munmap((void *)mem, size);
    close(fd);
    return 0;
}
