/**
 * A JSON document with one large array, written as a stream through an AtomicFile: items go out as
 * they come, the totals are appended at the end (so `jq '.total_keys'` works), and memory holds
 * one item at a time whatever the size of the set.
 */
import { AtomicFile } from './atomic-file.js';

export class JsonArrayFile<T> {
  private count = 0;
  private pending: string[] = [];
  private pendingBytes = 0;

  private constructor(private readonly file: AtomicFile) {}

  static async create<T>(target: string, header: Record<string, unknown>, arrayField: string): Promise<JsonArrayFile<T>> {
    const file = await AtomicFile.create(target);
    const head = JSON.stringify(header);
    await file.write(`${head.slice(0, -1)}${head.length > 2 ? ',' : ''}${JSON.stringify(arrayField)}:[\n`);
    return new JsonArrayFile<T>(file);
  }

  get written(): number {
    return this.count;
  }

  async push(item: T): Promise<void> {
    const text = (this.count === 0 ? '' : ',\n') + JSON.stringify(item);
    this.count++;
    this.pending.push(text);
    this.pendingBytes += text.length;
    if (this.pendingBytes > 1 << 20) await this.flush();
  }

  /**
   * Appends `count` elements already serialized natively (`{..},\n{..}`) and wipes the buffer once
   * written: how plaintext keys reach the file without ever being JavaScript strings.
   */
  async pushSerialized(elements: Buffer, count: number): Promise<void> {
    if (count === 0) return;
    await this.flush();
    try {
      if (this.count > 0) await this.file.write(',\n');
      await this.file.write(elements);
      this.count += count;
    } finally {
      elements.fill(0);
    }
  }

  private async flush(): Promise<void> {
    if (this.pending.length === 0) return;
    const chunk = this.pending.join('');
    this.pending = [];
    this.pendingBytes = 0;
    await this.file.write(chunk);
  }

  async commit(trailer: Record<string, unknown>): Promise<void> {
    await this.flush();
    const tail = JSON.stringify(trailer);
    await this.file.write(`\n]${tail.length > 2 ? `,${tail.slice(1)}` : '}'}\n`);
    await this.file.commit();
  }

  abort(): Promise<void> {
    this.pending = [];
    return this.file.abort();
  }
}
