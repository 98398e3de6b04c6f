/* Cold reads of natgrad's own files: drops given files' pages from the kernel's page cache and
 * counts how many stay resident. `natgrad data-bench --cold` times its passes this way because
 * the machines it runs on are shared and it has no root: writing /proc/sys/vm/drop_caches would
 * need root and would empty every other user's cache too, while posix_fadvise(DONTNEED) on a file
 * we can open touches only that file. The advice is only advice (tmpfs keeps its files in memory,
 * pages mapped or being written stay), hence the count with mincore(), which the caller checks
 * before calling a figure cold. */
#ifndef NG_PAGE_CACHE_H
#define NG_PAGE_CACHE_H

#include <stdint.h>

typedef struct {
    int64_t files, bytes;    /* the files counted and their sizes */
    int64_t pages, resident; /* their pages, and those in the page cache */
    char worst[4096];        /* the file with the most resident pages ("" when none) */
    int64_t worst_pages, worst_resident;
    int worst_tmpfs; /* that file is on tmpfs, which cannot drop it */
} ng_page_residency;

/* Writes the file's dirty pages back (fdatasync: dirty pages are not dropped) and advises the
 * kernel to drop all its cached pages. An error naming the file when it cannot be opened or the
 * advice is refused. */
void ng_page_cache_evict(const char *path);

/* Adds the file's size, pages and resident pages (mmap + mincore, which reads nothing) to r.
 * mincore reports every page resident for a file the caller may not write (a Linux rule against
 * cache side channels), so such a file never looks cold. */
void ng_page_cache_count(const char *path, ng_page_residency *r);

/* The fraction of r's pages still resident (0 for no pages). */
double ng_page_residency_fraction(const ng_page_residency *r);

#endif
