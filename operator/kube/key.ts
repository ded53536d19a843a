/**
 * The key of a namespaced object, as controller-runtime's types.NamespacedName: the work queues,
 * the controllers and the scale handler pass this, never a "namespace/name" string to split.
 */
export interface ObjectKey {
  readonly namespace: string;
  readonly name: string;
}

/** The key of an object (its metadata's namespace and name). */
export function keyOf(obj: { metadata?: { namespace?: string; name?: string } }): ObjectKey {
  return { namespace: obj.metadata?.namespace ?? '', name: obj.metadata?.name ?? '' };
}

/** "namespace/name": for logs, maps and sets only (never parsed back). */
export function keyString(key: ObjectKey): string {
  return `${key.namespace}/${key.name}`;
}
