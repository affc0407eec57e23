/** A small typed event emitter: no dependency, same in browsers and Node. */
export class Emitter<Events extends object> {
  readonly #listeners = new Map<keyof Events, Set<(value: never) => void>>();
  readonly #onListenerError: (error: unknown, name: keyof Events) => void;

  /** onListenerError gets what a listener threw, and the name of the event whose listener threw it. */
  constructor(onListenerError: (error: unknown, name: keyof Events) => void) {
    this.#onListenerError = onListenerError;
  }

  /** Call listener on each `name` event; returns a function that stops it. */
  on<K extends keyof Events>(name: K, listener: (value: Events[K]) => void): () => void {
    let set = this.#listeners.get(name);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(name, set);
    }
    set.add(listener as (value: never) => void);
    return () => this.off(name, listener);
  }

  /** Stop calling a listener. */
  off<K extends keyof Events>(name: K, listener: (value: Events[K]) => void): void {
    this.#listeners.get(name)?.delete(listener as (value: never) => void);
  }

  /** Call every listener of `name`; one that throws does not stop the others (the error is reported). */
  emit<K extends keyof Events>(name: K, value: Events[K]): void {
    const set = this.#listeners.get(name);
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        (listener as (value: Events[K]) => void)(value);
      } catch (error) {
        this.#onListenerError(error, name);
      }
    }
  }
}
