/* common.h - what every zkw public header shares.
 *
 * ZKW_API marks the functions a zkw library exports; the libraries are
 * built with -fvisibility=hidden, so nothing else leaves them.
 */
#ifndef ZKW_COMMON_H
#define ZKW_COMMON_H

#if defined(__GNUC__) || defined(__clang__)
#define ZKW_API __attribute__((visibility("default")))
#else
#define ZKW_API
#endif

#endif /* ZKW_COMMON_H */
