/*
 * LD_PRELOAD shim for tests/unit/elfcorehdr/test_real_kexec_tools.py: kexec-tools' load syscalls never reach the kernel.
 *
 * kexec-tools calls libc's syscall(__NR_kexec_load, entry, nr_segments, segments, flags). This
 * syscall() writes what it was given under $KEXEC_SHIM_OUT and returns success:
 *   calls        one line per load syscall: "kexec_load FLAGS ENTRY NR" or "kexec_file_load"
 *   segments     one line per segment: "INDEX MEM MEMSZ BUFSZ" (hex)
 *   segINDEX     the segment's bufsz bytes
 * kexec_file_load is answered with ENOSYS, as a kernel without it would. Every other number goes to
 * the real syscall().
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>

struct segment {
    const void *buf;
    size_t bufsz;
    const void *mem;
    size_t memsz;
};

static FILE *open_out(const char *name, const char *mode)
{
    const char *dir = getenv("KEXEC_SHIM_OUT");
    char path[4096];

    if (!dir)
        return NULL;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return fopen(path, mode);
}

static long record_load(long entry, unsigned long nr, const struct segment *segments, unsigned long flags)
{
    FILE *calls = open_out("calls", "a");
    FILE *index = open_out("segments", "w");
    char name[32];

    if (!calls || !index) {
        errno = EIO;
        return -1;
    }
    fprintf(calls, "kexec_load %lx %lx %lu\n", flags, (unsigned long)entry, nr);
    fclose(calls);
    for (unsigned long i = 0; i < nr; i++) {
        FILE *data;

        fprintf(index, "%lu %lx %lx %lx\n", i, (unsigned long)segments[i].mem,
                (unsigned long)segments[i].memsz, (unsigned long)segments[i].bufsz);
        snprintf(name, sizeof(name), "seg%lu", i);
        data = open_out(name, "wb");
        if (!data) {
            fclose(index);
            errno = EIO;
            return -1;
        }
        if (segments[i].bufsz)
            fwrite(segments[i].buf, 1, segments[i].bufsz, data);
        fclose(data);
    }
    fclose(index);
    return 0;
}

long syscall(long number, ...)
{
    long (*real)(long, ...);
    long a[6];
    va_list ap;

    va_start(ap, number);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);

    if (number == SYS_kexec_load)
        return record_load(a[0], (unsigned long)a[1], (const struct segment *)a[2], (unsigned long)a[3]);
    if (number == SYS_kexec_file_load) {
        FILE *calls = open_out("calls", "a");

        if (calls) {
            fputs("kexec_file_load\n", calls);
            fclose(calls);
        }
        errno = ENOSYS;
        return -1;
    }
    real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
