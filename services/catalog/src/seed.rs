//! The demo catalog: products a Chilean shop sells, with realistic net prices in pesos.
//! Loaded by `orderflow catalog seed` and on the first start of an empty database.
//! Idempotent: products that exist are left as they are.

use sqlx::PgPool;

/// (SKU, name, description, category, net price CLP, exempt, stock on hand)
type Demo = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    i64,
    bool,
    i64,
);

/// The demo products.
pub const DEMO_PRODUCTS: &[Demo] = &[
    (
        "CAFE-GRANO-250",
        "Café de grano tostado 250 g",
        "Café de especialidad de altura, tueste medio, notas a chocolate",
        "Despensa",
        5033,
        false,
        120,
    ),
    (
        "CAFE-MOLIDO-500",
        "Café molido 500 g",
        "Café molido para cafetera de filtro o italiana",
        "Despensa",
        6714,
        false,
        90,
    ),
    (
        "TE-CEYLAN-100",
        "Té negro Ceylán 100 bolsitas",
        "Té negro clásico en bolsitas individuales",
        "Despensa",
        2512,
        false,
        200,
    ),
    (
        "YERBA-MATE-1K",
        "Yerba mate 1 kg",
        "Yerba mate con palo, sabor suave",
        "Despensa",
        4193,
        false,
        60,
    ),
    (
        "MANJAR-1K",
        "Manjar tradicional 1 kg",
        "Dulce de leche chileno para repostería y onces",
        "Despensa",
        3352,
        false,
        80,
    ),
    (
        "MERMELADA-MORA",
        "Mermelada de mora 400 g",
        "Mermelada artesanal de moras del sur de Chile",
        "Despensa",
        2091,
        false,
        70,
    ),
    (
        "ACEITE-OLIVA-500",
        "Aceite de oliva extra virgen 500 ml",
        "Aceite de oliva del Valle del Huasco, primera prensa en frío",
        "Despensa",
        6293,
        false,
        50,
    ),
    (
        "MERKEN-100",
        "Merkén ahumado 100 g",
        "Ají cacho de cabra ahumado con semillas de cilantro, receta mapuche",
        "Despensa",
        2512,
        false,
        100,
    ),
    (
        "SAL-MAR-1K",
        "Sal de mar de Cáhuil 1 kg",
        "Sal marina artesanal de las salinas de Cáhuil",
        "Despensa",
        1672,
        false,
        150,
    ),
    (
        "HARINA-1K",
        "Harina sin polvos de hornear 1 kg",
        "Harina de trigo para pan amasado y sopaipillas",
        "Despensa",
        1251,
        false,
        300,
    ),
    (
        "ARROZ-GRADO1-1K",
        "Arroz grado 1 1 kg",
        "Arroz de grano largo, grado 1",
        "Despensa",
        1588,
        false,
        250,
    ),
    (
        "LENTEJAS-1K",
        "Lentejas 1 kg",
        "Lentejas de grano mediano para guisos",
        "Despensa",
        2176,
        false,
        140,
    ),
    (
        "POROTOS-1K",
        "Porotos burros 1 kg",
        "Porotos para porotos granados y con riendas",
        "Despensa",
        2848,
        false,
        110,
    ),
    (
        "QUINOA-500",
        "Quinoa real 500 g",
        "Quinoa del altiplano, lavada y lista para cocinar",
        "Despensa",
        3352,
        false,
        60,
    ),
    (
        "MIEL-ULMO-500",
        "Miel de ulmo 500 g",
        "Miel cremosa de ulmo de la Región de Los Ríos",
        "Despensa",
        5873,
        false,
        40,
    ),
    (
        "VINO-CARMENERE",
        "Vino Carménère reserva 750 ml",
        "Tinto del Valle de Colchagua, cepa emblema de Chile",
        "Bebidas",
        5874,
        false,
        96,
    ),
    (
        "VINO-SAUVIGNON",
        "Vino Sauvignon Blanc 750 ml",
        "Blanco fresco del Valle de Casablanca",
        "Bebidas",
        5034,
        false,
        72,
    ),
    (
        "PISCO-35-750",
        "Pisco 35° 750 ml",
        "Pisco del Valle del Elqui, doble destilado",
        "Bebidas",
        6714,
        false,
        48,
    ),
    (
        "CERVEZA-ARTESANAL",
        "Cerveza artesanal ámbar 330 ml",
        "Cerveza ámbar de Valdivia",
        "Bebidas",
        1343,
        false,
        240,
    ),
    (
        "AGUA-MINERAL-1500",
        "Agua mineral con gas 1,5 L",
        "Agua mineral de vertiente",
        "Bebidas",
        923,
        false,
        400,
    ),
    (
        "JUGO-NARANJA-1L",
        "Jugo de naranja natural 1 L",
        "Jugo exprimido, sin azúcar añadida",
        "Bebidas",
        2091,
        false,
        90,
    ),
    (
        "MOTE-HUESILLO",
        "Mote con huesillo 1 L",
        "Bebida tradicional de verano con mote de trigo y duraznos deshidratados",
        "Bebidas",
        2512,
        false,
        70,
    ),
    (
        "PAN-AMASADO-6",
        "Pan amasado 6 unidades",
        "Pan amasado horneado a diario",
        "Panadería",
        1848,
        false,
        60,
    ),
    (
        "MARRAQUETA-1K",
        "Marraqueta 1 kg",
        "Pan batido crujiente",
        "Panadería",
        1924,
        false,
        80,
    ),
    (
        "KUCHEN-MURTA",
        "Kuchen de murta",
        "Kuchen del sur con murta y crumble",
        "Panadería",
        8395,
        false,
        15,
    ),
    (
        "ALFAJOR-6",
        "Alfajores de manjar 6 unidades",
        "Alfajores bañados en chocolate rellenos de manjar",
        "Panadería",
        3352,
        false,
        50,
    ),
    (
        "EMPANADA-PINO-4",
        "Empanadas de pino 4 unidades",
        "Empanadas horneadas de carne, cebolla, huevo y aceituna",
        "Panadería",
        7563,
        false,
        30,
    ),
    (
        "QUESO-MANTECOSO",
        "Queso mantecoso 500 g",
        "Queso mantecoso laminado del sur",
        "Lácteos",
        5453,
        false,
        45,
    ),
    (
        "QUESO-CABRA-200",
        "Queso de cabra 200 g",
        "Queso fresco de cabra de la Región de Coquimbo",
        "Lácteos",
        3773,
        false,
        35,
    ),
    (
        "LECHE-ENTERA-1L",
        "Leche entera 1 L",
        "Leche entera de larga vida",
        "Lácteos",
        1007,
        false,
        300,
    ),
    (
        "YOGUR-NATURAL-1K",
        "Yogur natural 1 kg",
        "Yogur natural sin azúcar",
        "Lácteos",
        2512,
        false,
        60,
    ),
    (
        "PALTA-HASS-1K",
        "Paltas Hass 1 kg",
        "Paltas Hass maduras, listas para el completo",
        "Frutas y verduras",
        4193,
        false,
        80,
    ),
    (
        "TOMATE-1K",
        "Tomates 1 kg",
        "Tomates limachinos de temporada",
        "Frutas y verduras",
        1672,
        false,
        120,
    ),
    (
        "CEREZAS-1K",
        "Cerezas 1 kg",
        "Cerezas de exportación de la Región de O'Higgins",
        "Frutas y verduras",
        5033,
        false,
        40,
    ),
    (
        "CHIRIMOYA-1K",
        "Chirimoyas 1 kg",
        "Chirimoyas del Valle de Aconcagua",
        "Frutas y verduras",
        3352,
        false,
        30,
    ),
    (
        "SALMON-FILETE-1K",
        "Filete de salmón 1 kg",
        "Salmón del Atlántico criado en Chiloé, sin espinas",
        "Pescados y mariscos",
        12597,
        false,
        25,
    ),
    (
        "MACHAS-500",
        "Machas congeladas 500 g",
        "Machas para preparar a la parmesana",
        "Pescados y mariscos",
        8395,
        false,
        20,
    ),
    (
        "LOCOS-CONSERVA",
        "Locos en conserva 425 g",
        "Locos cocidos en conserva",
        "Pescados y mariscos",
        10076,
        false,
        18,
    ),
    (
        "CHOCOLATE-AMARGO",
        "Chocolate amargo 70% 100 g",
        "Chocolate de cacao fino elaborado en Puerto Varas",
        "Dulces",
        2512,
        false,
        90,
    ),
    (
        "CALUGAS-250",
        "Calugas de leche 250 g",
        "Calugas blandas de leche y mantequilla",
        "Dulces",
        1588,
        false,
        70,
    ),
    (
        "CUADERNO-UNIV",
        "Cuaderno universitario 100 hojas",
        "Cuaderno de matemáticas cuadro grande",
        "Librería",
        1671,
        false,
        200,
    ),
    (
        "LAPICES-12",
        "Lápices de colores 12 unidades",
        "Lápices de colores escolares",
        "Librería",
        2091,
        false,
        150,
    ),
    (
        "NOVELA-BOLSILLO",
        "Novela de bolsillo",
        "Edición de bolsillo de un clásico de la literatura chilena",
        "Librería",
        6714,
        false,
        40,
    ),
    (
        "MANTA-LANA",
        "Manta de lana de oveja",
        "Manta tejida a telar en Chiloé",
        "Hogar",
        33605,
        false,
        10,
    ),
    (
        "GREDA-POMAIRE",
        "Olla de greda de Pomaire",
        "Olla de greda para pastel de choclo",
        "Hogar",
        10075,
        false,
        12,
    ),
    (
        "COBRE-JARRO",
        "Jarro de cobre",
        "Jarro de cobre chileno trabajado a mano",
        "Hogar",
        21000,
        false,
        8,
    ),
    (
        "TAZA-CERAMICA",
        "Taza de cerámica",
        "Taza de cerámica esmaltada 350 ml",
        "Hogar",
        5033,
        false,
        60,
    ),
    (
        "PARAGUAS",
        "Paraguas plegable",
        "Paraguas resistente al viento del sur",
        "Hogar",
        8394,
        false,
        35,
    ),
    (
        "JABON-RAPAMIEL",
        "Jabón de rosa mosqueta",
        "Jabón artesanal con aceite de rosa mosqueta",
        "Cuidado personal",
        2931,
        false,
        80,
    ),
    (
        "PROTECTOR-SOLAR",
        "Protector solar FPS 50 200 ml",
        "Protector solar de amplio espectro",
        "Cuidado personal",
        10075,
        false,
        45,
    ),
    (
        "CURSO-COCINA",
        "Curso online de cocina chilena",
        "Curso en video: empanadas, pastel de choclo y sopaipillas (servicio educacional exento de IVA)",
        "Servicios",
        25000,
        true,
        1000,
    ),
    (
        "CURSO-CATA-VINO",
        "Curso online de cata de vinos",
        "Cuatro sesiones en vivo con sommelier (servicio educacional exento de IVA)",
        "Servicios",
        40000,
        true,
        500,
    ),
    (
        "ENTRADA-MUSEO",
        "Entrada a museo regional",
        "Entrada general válida por un día (exenta de IVA)",
        "Servicios",
        3000,
        true,
        1000,
    ),
    (
        "DONACION-BOMBEROS",
        "Aporte a Bomberos de Chile",
        "Aporte voluntario a la compañía de bomberos local (exento de IVA)",
        "Servicios",
        5000,
        true,
        100000,
    ),
    (
        "FLETE-REGIONES",
        "Despacho a regiones",
        "Transporte de carga a regiones (servicio)",
        "Servicios",
        4201,
        false,
        100000,
    ),
];

/// Inserts every demo product that is not there yet; returns how many were added.
pub async fn seed_demo(pool: &PgPool) -> anyhow::Result<u64> {
    let mut added = 0;
    let mut tx = pool.begin().await?;
    for (sku, name, description, category, net_price, exempt, on_hand) in DEMO_PRODUCTS {
        added += sqlx::query(
            "INSERT INTO products (sku, name, description, category, net_price, exempt, on_hand) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (sku) DO NOTHING",
        )
        .bind(sku)
        .bind(name)
        .bind(description)
        .bind(category)
        .bind(net_price)
        .bind(exempt)
        .bind(on_hand)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_catalog_is_large_valid_and_mixed() {
        assert!(DEMO_PRODUCTS.len() >= 50);
        assert!(
            DEMO_PRODUCTS.iter().any(|p| p.5),
            "some products are exempt"
        );
        let mut skus: Vec<&str> = DEMO_PRODUCTS.iter().map(|p| p.0).collect();
        skus.sort();
        skus.dedup();
        assert_eq!(skus.len(), DEMO_PRODUCTS.len(), "SKUs are unique");
        for p in DEMO_PRODUCTS {
            assert!(crate::domain::parse_sku(p.0).is_ok(), "{}", p.0);
            assert!(p.4 > 0 && p.6 >= 0, "{}", p.0);
        }
    }
}
