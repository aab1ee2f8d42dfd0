/**
 * `run --log-size`: the log file's cap as the admin writes it (bytes, or 512K / 10M / 1G), checked against the
 * limits in platform/log-file.ts.
 */
import { ErrorCode, RetroflectError } from '../errors.ts';
import { MAX_LOG_FILE_BYTES, MIN_LOG_FILE_BYTES } from '../platform/log-file.ts';

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };

export function parseLogSize(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d+)\s*([KMG]?)i?B?$/i.exec(text.trim());
  const bytes = m ? Number(m[1]) * UNITS[m[2].toUpperCase()] : NaN;
  if (!Number.isSafeInteger(bytes) || bytes < MIN_LOG_FILE_BYTES || bytes > MAX_LOG_FILE_BYTES) {
    const range = `${MIN_LOG_FILE_BYTES / 1024}K to ${MAX_LOG_FILE_BYTES / 1024 ** 3}G`;
    throw new RetroflectError(ErrorCode.USAGE, `--log-size ${text} is not a log file size from ${range}.`, {
      hint: 'Give bytes, or a number with K, M or G (e.g. 10M).',
      details: { logSize: text },
    });
  }
  return bytes;
}
