/* Produces the jhash2 vectors hard-coded in test_hashing.py: gcc -O2 -o jh jhash_vectors.c && ./jh
 * The macros are include/linux/jhash.h (Linux), copied verbatim in behaviour. */
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
typedef uint32_t u32;
static inline u32 rol32(u32 w, unsigned s){return (w<<s)|(w>>((-s)&31));}
#define JHASH_INITVAL 0xdeadbeef
#define __jhash_mix(a, b, c) { \
 a -= c;  a ^= rol32(c, 4);  c += b; \
 b -= a;  b ^= rol32(a, 6);  a += c; \
 c -= b;  c ^= rol32(b, 8);  b += a; \
 a -= c;  a ^= rol32(c, 16); c += b; \
 b -= a;  b ^= rol32(a, 19); a += c; \
 c -= b;  c ^= rol32(b, 4);  b += a; }
#define __jhash_final(a, b, c) { \
 c ^= b; c -= rol32(b, 14); a ^= c; a -= rol32(c, 11); \
 b ^= a; b -= rol32(a, 25); c ^= b; c -= rol32(b, 16); \
 a ^= c; a -= rol32(c, 4);  b ^= a; b -= rol32(a, 14); \
 c ^= b; c -= rol32(b, 24); }
static u32 jhash2(const u32 *k, u32 length, u32 initval){
 u32 a,b,c; a=b=c=JHASH_INITVAL+(length<<2)+initval;
 while(length>3){a+=k[0];b+=k[1];c+=k[2];__jhash_mix(a,b,c);length-=3;k+=3;}
 switch(length){case 3:c+=k[2];case 2:b+=k[1];case 1:a+=k[0];__jhash_final(a,b,c);break;case 0:break;}
 return c;}
#define SEED 0x64737231
static void v4(const char *s, unsigned port){
 unsigned char key[20]={0}; key[10]=0xff; key[11]=0xff; inet_pton(AF_INET,s,key+12);
 u32 w[5]; memcpy(w,key,16); w[4]=port;
 printf("v4 %s client=0x%08x session(port %u)=0x%08x\n", s, jhash2(w,4,SEED), port, jhash2(w,5,SEED));}
static void v6(const char *s, unsigned port){
 unsigned char key[16]; inet_pton(AF_INET6,s,key);
 u32 w[5]; memcpy(w,key,16); w[4]=port;
 printf("v6 %s client=0x%08x session(port %u)=0x%08x\n", s, jhash2(w,4,SEED), port, jhash2(w,5,SEED));}
int main(){
 u32 z[6]={1,2,3,4,5,6};
 for(int n=0;n<=6;n++) printf("seq len %d = 0x%08x\n", n, jhash2(z,n,SEED));
 v4("198.51.100.7",0); v4("198.51.100.7",40000); v4("203.0.113.1",0); v4("0.0.0.0",0);
 v6("2001:db8::7",0); v6("2001:db8::7",40000); v6("2001:db8:1:2:3:4:5:6",443);
 return 0;}
