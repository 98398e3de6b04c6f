/* Rank-aware logging with levels; the level comes from NG_LOG_LEVEL or ng_log_set_level. */
#ifndef NG_LOG_H
#define NG_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { NG_LOG_DEBUG = 0, NG_LOG_INFO, NG_LOG_WARN, NG_LOG_ERROR } ng_log_level;

void ng_log_set_level(ng_log_level l);
/* Under MPI every line carries "[rank r/w]"; by default only rank 0 prints INFO and DEBUG. */
void ng_log_set_rank(int rank, int world);
void ng_log(ng_log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define NG_INFO(...) ng_log(NG_LOG_INFO, __VA_ARGS__)
#define NG_WARN(...) ng_log(NG_LOG_WARN, __VA_ARGS__)
#define NG_DEBUG(...) ng_log(NG_LOG_DEBUG, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
