/* Dropping and counting one file's pages in the page cache (see page_cache.h for why per file). */
#define _GNU_SOURCE /* fdatasync, mincore */
#include "apps/page_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "core/error.h"

/* mincore's vector is one byte a page: mapping a window at a time bounds it whatever the size. */
#define WINDOW ((int64_t)1 << 28)

void ng_page_cache_evict(const char *path) {
    int fd = open(path, O_RDONLY);
    NG_CHECK(fd >= 0, "--cold: cannot open %s: %s", path, strerror(errno));
    /* fdatasync works on a read-only descriptor and costs nothing on a clean file. */
    int ok = fdatasync(fd) == 0 || errno == EINVAL || errno == EROFS;
    int err = errno;
    int adv = ok ? posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) : 0;
    close(fd);
    NG_CHECK(ok, "--cold: cannot write back %s before dropping its pages: %s", path, strerror(err));
    NG_CHECK(adv == 0, "--cold: the kernel refused to drop %s from the page cache: %s", path,
             strerror(adv));
}

/* Resident pages of [off, off + len) of the open file. */
static int64_t resident_in(int fd, int64_t off, int64_t len, int64_t page, const char *path) {
    void *m = mmap(NULL, (size_t)len, PROT_READ, MAP_SHARED, fd, (off_t)off);
    NG_CHECK(m != MAP_FAILED, "--cold: cannot map %s to count its cached pages: %s", path,
             strerror(errno));
    int64_t pages = (len + page - 1) / page, n = 0;
    unsigned char *vec = malloc((size_t)pages);
    int ok = vec && mincore(m, (size_t)len, vec) == 0;
    int err = errno;
    for (int64_t i = 0; ok && i < pages; i++) n += vec[i] & 1;
    free(vec);
    munmap(m, (size_t)len);
    NG_CHECK(ok, "--cold: cannot count the cached pages of %s: %s", path,
             vec ? strerror(err) : "out of host memory");
    return n;
}

void ng_page_cache_count(const char *path, ng_page_residency *r) {
    int fd = open(path, O_RDONLY);
    NG_CHECK(fd >= 0, "--cold: cannot open %s: %s", path, strerror(errno));
    struct stat st;
    struct statfs fs;
    NG_CHECK(fstat(fd, &st) == 0 && fstatfs(fd, &fs) == 0, "--cold: cannot stat %s: %s", path,
             strerror(errno));
    int64_t page = sysconf(_SC_PAGESIZE), size = st.st_size;
    int64_t pages = (size + page - 1) / page, resident = 0;
    for (int64_t off = 0; off < size; off += WINDOW)
        resident += resident_in(fd, off, size - off < WINDOW ? size - off : WINDOW, page, path);
    close(fd);
    r->files++, r->bytes += size, r->pages += pages, r->resident += resident;
    if (resident > r->worst_resident || !r->worst[0]) {
        snprintf(r->worst, sizeof r->worst, "%s", path);
        r->worst_pages = pages, r->worst_resident = resident;
        r->worst_tmpfs = fs.f_type == TMPFS_MAGIC;
    }
}

double ng_page_residency_fraction(const ng_page_residency *r) {
    return r->pages ? (double)r->resident / (double)r->pages : 0.0;
}
