/** What the homeserver said, kept apart from how the tool reacts to it (client.ts decides that). */
export class MatrixError extends Error {
  override readonly name = 'MatrixError';
  constructor(
    readonly status: number,
    readonly errcode: string | undefined,
    message: string,
    readonly body: Record<string, unknown> = {},
  ) {
    super(message);
  }

  get retryAfterMs(): number | undefined {
    const v = this.body.retry_after_ms;
    return typeof v === 'number' ? v : undefined;
  }
}
