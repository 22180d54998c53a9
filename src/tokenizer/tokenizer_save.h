/*
 * tokenizer_save.h - making a byte-level tokenizer from nothing and writing
 * tokenizers out as Hugging Face files.
 */
#ifndef GRAFT_TOKENIZER_SAVE_H
#define GRAFT_TOKENIZER_SAVE_H

#include "internal.h"

/*
 * A byte-level tokenizer: ids 0..255 are the bytes themselves (id b is byte
 * b, spelled in the vocab with GPT-2's byte-to-unicode character for b), no
 * merges, and id 256 is the special token "<|endoftext|>", which is both BOS
 * and EOS (vocab size 257). It is a GPT-2 BPE tokenizer with an empty merge
 * list, so it goes through the same encoder and saves to the same files.
 */
graft_status graft_tokenizer_create_bytes(graft_tokenizer **out);

/*
 * Write tok into dir (which must exist):
 *  - GPT-2 byte-level BPE (loaded from tokenizer.json, vocab.json+merges.txt,
 *    encoder.json+vocab.bpe, or made by graft_tokenizer_create_bytes):
 *    tokenizer.json (model BPE, ByteLevel pre-tokenizer without prefix space
 *    and with GPT-2's regex, ByteLevel decoder, added_tokens), vocab.json,
 *    merges.txt, tokenizer_config.json (GPT2Tokenizer, bos/eos/unk) and
 *    special_tokens_map.json - what save_pretrained writes for GPT-2;
 *  - llama2.c tokenizers: tokenizer.bin rebuilt from its pieces and scores
 *    (byte for byte the file it was loaded from)
 *    (graft's format; transformers cannot read it).
 * model_max_length goes into tokenizer_config.json (<= 0: left out).
 * Every file is written atomically. graft_tokenizer_load(dir) gives the same
 * ids as tok.
 */
graft_status graft_tokenizer_save_hf(const graft_tokenizer *tok, const char *dir, long model_max_length);
/* graft_tokenizer_save_hf without a model_max_length. */
graft_status graft_tokenizer_save(const graft_tokenizer *tok, const char *dir);

#endif /* GRAFT_TOKENIZER_SAVE_H */
