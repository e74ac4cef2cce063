// The cart survives a reload: it is kept in the browser (localStorage), SKUs and
// quantities only; prices and availability are always read fresh from the catalog.

export interface CartLine {
  sku: string;
  name: string;
  quantity: number;
}

const KEY = "orderflow.cart";

export function lines(): CartLine[] {
  try {
    const parsed = JSON.parse(localStorage.getItem(KEY) ?? "[]");
    return Array.isArray(parsed) ? parsed.filter((l) => typeof l?.sku === "string" && l.quantity > 0) : [];
  } catch {
    return [];
  }
}

function save(next: CartLine[]): void {
  localStorage.setItem(KEY, JSON.stringify(next));
  document.dispatchEvent(new Event("cart-changed"));
}

export function add(sku: string, name: string, quantity = 1): void {
  const current = lines();
  const line = current.find((l) => l.sku === sku);
  if (line) line.quantity += quantity;
  else current.push({ sku, name, quantity });
  save(current);
}

export function setQuantity(sku: string, quantity: number): void {
  save(lines().map((l) => (l.sku === sku ? { ...l, quantity } : l)).filter((l) => l.quantity > 0));
}

export function clear(): void {
  save([]);
}

export function count(): number {
  return lines().reduce((n, l) => n + l.quantity, 0);
}
