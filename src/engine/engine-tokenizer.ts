// The tokenizer side of EngineClient (encode, decode, chat template), shared by the in-process engine and
// the worker-thread client so both validate ids and pass template options the same way. Also the one check
// that a model directory exists. Must not: hold engine state.
import fs from 'node:fs';
import { UserError } from '../errors.js';
import type { ChatMessage } from '../tokenizer/chat-template.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import { EngineRequestError, type ChatTemplateOptions, type EngineChatMessage } from './engine-client.js';

export function checkModelDir(dir: string): void {
  if (!fs.existsSync(dir)) {
    throw new UserError(`model directory ${dir} does not exist: pass a Hugging Face model directory (or make one with \`longctx init-model\`)`);
  }
}

export function encodeText(tk: TextTokenizer, text: string, opts: { addSpecialTokens?: boolean } = {}): Promise<number[]> {
  return tk.encode(text, opts);
}

/** Ids outside [0, vocabSize) are an 'invalid_token_id' refusal; special tokens are skipped by default. */
export function decodeIds(tk: TextTokenizer, vocabSize: number, ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): Promise<string> {
  const bad = ids.find((id) => !Number.isSafeInteger(id) || id < 0 || id >= vocabSize);
  if (bad !== undefined) throw new EngineRequestError('invalid_token_id', `token id ${bad} is outside the vocabulary [0, ${vocabSize})`);
  return tk.decode(ids, { skipSpecialTokens: opts.skipSpecialTokens ?? true });
}

export async function renderChat(tk: TextTokenizer, messages: readonly EngineChatMessage[], opts: ChatTemplateOptions): Promise<string> {
  return tk.applyChatTemplate(messages as readonly ChatMessage[], {
    addGenerationPrompt: opts.addGenerationPrompt,
    ...(opts.tools && opts.tools.length > 0 ? { tools: opts.tools } : {}),
    ...(opts.variables ? { variables: opts.variables } : {}),
  });
}
